//! Where the Kafka clients find the certificates that sign a TLS broker's.
//!
//! librdkafka is linked with OpenSSL built from source (so that building sohoa needs no
//! `libssl-dev`), and that OpenSSL's default certificate directory is its build-time
//! `OPENSSLDIR`, `/usr/local/ssl`, which no distribution fills. librdkafka only searches
//! the usual system bundles (`/etc/ssl/certs/ca-certificates.crt` on Debian,
//! `/etc/pki/tls/certs/ca-bundle.crt` on Red Hat, ...) when `ssl.ca.location` is `probe`.
//! Without it, a broker whose certificate the system trusts would be refused.

use std::collections::BTreeMap;

/// The librdkafka properties that name the certificates to trust.
const CA_PROPERTIES: [&str; 3] = ["ssl.ca.location", "ssl.ca.pem", "ssl.ca.certificate.stores"];

/// Sets `ssl.ca.location = probe` when the clients speak TLS (`security.protocol` is `ssl`
/// or `sasl_ssl`) and no CA is configured, so they trust what the system trusts. A CA the
/// operator names is left alone.
pub fn trust_system_certificates(properties: &mut BTreeMap<String, String>) {
    let tls = properties
        .get("security.protocol")
        .is_some_and(|p| p.eq_ignore_ascii_case("ssl") || p.eq_ignore_ascii_case("sasl_ssl"));
    if tls && !CA_PROPERTIES.iter().any(|k| properties.contains_key(*k)) {
        properties.insert("ssl.ca.location".into(), "probe".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn tls_without_a_ca_trusts_the_system_bundle() {
        for protocol in ["ssl", "SASL_SSL"] {
            let mut p = props(&[("security.protocol", protocol)]);
            trust_system_certificates(&mut p);
            assert_eq!(p["ssl.ca.location"], "probe", "{protocol}");
        }
    }

    #[test]
    fn a_named_ca_is_kept() {
        for key in CA_PROPERTIES {
            let mut p = props(&[("security.protocol", "ssl"), (key, "/etc/kafka/ca.pem")]);
            let before = p.clone();
            trust_system_certificates(&mut p);
            assert_eq!(p, before, "{key}");
        }
    }

    #[test]
    fn plaintext_is_left_alone() {
        for pairs in [
            vec![],
            vec![("security.protocol", "plaintext")],
            vec![("security.protocol", "sasl_plaintext")],
        ] {
            let mut p = props(&pairs);
            trust_system_certificates(&mut p);
            assert!(!p.contains_key("ssl.ca.location"), "{pairs:?}");
        }
    }
}
