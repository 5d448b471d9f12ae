//! Property tests: no input bytes can panic a decoder, and decoding is deterministic.

mod common;

use common::decoder;
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use sohoa_schemas::{DecodeOutput, DecoderKind};

fn run(kind: DecoderKind, bytes: &[u8]) -> (Vec<String>, Vec<String>) {
    let mut out = DecodeOutput::default();
    decoder(kind).decode(bytes, &mut out);
    // Every event a decoder emits must also be valid canonical JSON.
    let events = out.events.iter().map(|e| e.to_json()).collect();
    let rejects = out.rejects.iter().map(|r| r.to_string()).collect();
    (events, rejects)
}

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A value for a DVCQG field: mostly plausible, often of the wrong type.
fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => "20[0-9]{2}(0[1-9]|1[0-2])(0[1-9]|[12][0-9])([01][0-9]|2[0-3])[0-5][0-9][0-5][0-9]".prop_map(Value::String),
        2 => (0i64..12).prop_map(Value::from),
        1 => "[ a-zA-Z0-9.\\-]{0,20}".prop_map(Value::String),
        1 => any_json(),
    ]
}

const FIELDS: &[&str] = &[
    "MaHoSo",
    "MaTTHC",
    "TenTTHC",
    "DonViXuLy",
    "KenhThucHien",
    "TrangThaiHoSo",
    "NgayNopHoSo",
    "NgayTiepNhan",
    "NgayHenTra",
    "NgayKetThucXuLy",
    "NgayTra",
    "NgayTuChoi",
    "LoaiDoiTuong",
    "SoGiayToChuHoSo",
    "HoSoCoThanhPhanSoHoa",
    "DuocThanhToanTrucTuyen",
    "ThoiDiemXuLy",
    "TrangThai",
];
const LISTS: &[&str] = &[
    "TaiLieuNop",
    "DanhSachLePhi",
    "DanhSachHoSoBoSung",
    "DanhSachGiayToKetQua",
    "QuaTrinhXuLy",
    "DinhDanhCHS",
];
const ITEM_FIELDS: &[&str] = &[
    "IsDeleted",
    "DuongDanTaiTepTin",
    "DuocSoHoa",
    "DuocTaiSuDung",
    "DuocLayTuKhoDMQG",
    "Gia",
    "NgayBoSung",
    "NgayTiepNhanBoSung",
    "NgayHenTraMoi",
    "DuongDanTepTinKetQua",
    "SoDinhDanh",
    "MaHoSo",
    "ThoiDiemXuLy",
    "TrangThai",
];

fn record() -> impl Strategy<Value = Value> {
    let item = prop::collection::btree_map(prop::sample::select(ITEM_FIELDS), field_value(), 0..6)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()));
    (
        prop::collection::btree_map(prop::sample::select(FIELDS), field_value(), 0..FIELDS.len()),
        prop::collection::btree_map(
            prop::sample::select(LISTS),
            prop::collection::vec(item, 0..4),
            0..3,
        ),
    )
        .prop_map(|(fields, lists)| {
            let mut m = Map::new();
            for (k, v) in fields {
                m.insert(k.to_owned(), v);
            }
            for (k, v) in lists {
                m.insert(k.to_owned(), Value::Array(v));
            }
            Value::Object(m)
        })
}

fn message() -> impl Strategy<Value = Value> {
    prop_oneof![
        record(),
        prop::collection::vec(record(), 0..4).prop_map(Value::Array),
        (
            prop::sample::select(&["DongBoHoSoMC", "CapNhatTienDoHoSoMC"][..]),
            prop::collection::vec(record(), 0..4)
        )
            .prop_map(|(s, d)| json!({"service": s, "data": d})),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        for kind in [DecoderKind::Dvcqg, DecoderKind::Canonical] {
            let (events, rejects) = run(kind, &bytes);
            // Random bytes are almost never JSON; when they are not, exactly one reject.
            if serde_json::from_slice::<Value>(&bytes).is_err() {
                prop_assert!(events.is_empty());
                prop_assert_eq!(rejects.len(), 1);
            }
        }
    }

    #[test]
    fn arbitrary_json_never_panics(v in any_json()) {
        let bytes = serde_json::to_vec(&v).unwrap();
        run(DecoderKind::Dvcqg, &bytes);
        run(DecoderKind::Canonical, &bytes);
    }

    #[test]
    fn dvcqg_shaped_messages_decode_deterministically(v in message()) {
        let bytes = serde_json::to_vec(&v).unwrap();
        let first = run(DecoderKind::Dvcqg, &bytes);
        let second = run(DecoderKind::Dvcqg, &bytes);
        prop_assert_eq!(&first, &second);
        // Every record (or progress step) is accounted for: one event or one reject each,
        // never silently dropped.
        let expected: usize = match &v {
            Value::Array(a) => a.iter().map(count_steps).sum(),
            Value::Object(o) if o.contains_key("data") => o["data"].as_array().unwrap().iter().map(count_steps).sum(),
            one => count_steps(one),
        };
        prop_assert_eq!(first.0.len() + first.1.len(), expected);
        // Whatever decodes re-decodes identically through the canonical decoder.
        for e in &first.0 {
            let (again, rejected) = run(DecoderKind::Canonical, e.as_bytes());
            prop_assert!(rejected.is_empty(), "{:?}", rejected);
            prop_assert_eq!(&again, &vec![e.clone()]);
        }
    }
}

/// How many events-or-rejects a record accounts for: one per progress step when it
/// carries a `QuaTrinhXuLy` list, otherwise one.
fn count_steps(v: &Value) -> usize {
    match v.get("QuaTrinhXuLy") {
        Some(Value::Array(steps)) => steps.len(),
        _ => 1,
    }
}
