use super::*;

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

/// A small region: a province merged into another, a district split by share, a
/// department split by field, a renamed code, and a chain of two mergers.
const REGION: &str = r#"
[[agencies]]
code = "P1"
name = "Old province"
level = "province"
valid_to = 2025-06-30
successors = ["P2"]

[[agencies]]
code = "P2"
name = "New province"
level = "province"

[[agencies]]
code = "D1"
name = "District"
level = "district"
province = "P1"
valid_to = 2025-06-30
successors = [{ code = "W1", share = 0.25 }, { code = "W2", share = 0.75 }]

[[agencies]]
code = "W1"
name = "Ward one"
level = "ward"
province = "P2"
valid_from = 2025-07-01

[[agencies]]
code = "W2"
name = "Ward two"
level = "ward"
province = "P2"
valid_from = 2025-07-01

[[agencies]]
code = "LAB"
name = "Labour"
level = "department"
province = "P1"
valid_to = 2025-02-28
successors = [{ code = "HEALTH", fields = ["btxh"] }, "HOME"]

[[agencies]]
code = "HEALTH"
name = "Health"
level = "department"
province = "P1"
valid_to = 2025-06-30
successors = ["HEALTH2"]

[[agencies]]
code = "HEALTH2"
name = "Health of the new province"
level = "department"
province = "P2"

[[agencies]]
code = "HOME"
name = "Home affairs"
level = "department"
province = "P1"

[[agencies]]
code = " agri "
name = "Agriculture"
level = "department"
province = "P1"
valid_to = 2025-02-28

[[agencies]]
code = "AGRI"
name = "Agriculture and Environment"
level = "department"
province = "P1"
valid_from = 2025-03-01
"#;

fn region() -> Agencies {
    Agencies::from_toml(REGION).unwrap()
}

fn id(a: &Agencies, code: &str) -> AgencyId {
    a.id(code).unwrap()
}

#[test]
fn the_embedded_reference_loads_and_names_the_merged_province() {
    let a = Agencies::embedded().unwrap();
    let p = a.default_province().unwrap();
    assert_eq!((a.code(p), a.name(p)), ("000.00.00.H20", "Tỉnh Đồng Tháp"));
    // Old Tiền Giang restates to the new Đồng Tháp; a district to a new ward; a
    // department through two mergers (Planning and Investment, then the province).
    let tg = id(&a, "000.00.00.H55");
    assert_eq!(a.code(a.restate(tg, None, "x")), "000.00.00.H20");
    let pi = id(&a, "000.00.11.H55");
    assert_eq!(a.code(a.fixed(pi).unwrap()), "000.00.16.H20");
    assert_eq!(
        a.breaks(),
        [(d("2025-03-01"), 5), (d("2025-07-01"), 32)],
        "the department mergers and the reorganization"
    );
    assert!(a.entries().iter().all(|e| e.illustrative));
}

#[test]
fn names_follow_the_versions_of_a_code() {
    let a = region();
    let agri = id(&a, "agri");
    assert_eq!(a.name_on(agri, d("2024-05-01")), "Agriculture");
    assert_eq!(a.name_on(agri, d("2025-02-28")), "Agriculture");
    assert_eq!(
        a.name_on(agri, d("2025-03-01")),
        "Agriculture and Environment"
    );
    assert_eq!(a.name(agri), "Agriculture and Environment");
    // Before the first version begins, the first.
    let w1 = id(&a, "W1");
    assert_eq!(a.name_on(w1, d("2024-01-01")), "Ward one");
}

#[test]
fn restating_follows_chains_fields_and_shares() {
    let a = region();
    let lab = id(&a, "LAB");
    // The field rule first, then on through the chain.
    assert_eq!(a.code(a.restate(lab, Some("BTXH"), "any")), "HEALTH2");
    assert_eq!(a.code(a.restate(lab, Some("XD"), "any")), "HOME");
    assert_eq!(a.code(a.restate(lab, None, "any")), "HOME");
    assert_eq!(a.fixed(lab), None, "depends on the dossier");
    // Shares: every dossier to one ward, the same every time, in proportion.
    let d1 = id(&a, "D1");
    let mut w1 = 0;
    for i in 0..4000 {
        let code = format!("H55-{i:06}");
        let to = a.restate(d1, None, &code);
        assert_eq!(to, a.restate(d1, Some("XD"), &code));
        let expected = if split_bucket(&code) < (1u64 << 30) as u32 {
            "W1"
        } else {
            "W2"
        };
        assert_eq!(a.code(to), expected, "{code}");
        w1 += usize::from(a.code(to) == "W1");
    }
    assert!((900..1100).contains(&w1), "{w1} of 4000 at a share of 0.25");
    // SHA-256 of "H55-000000", first four bytes: recomputable anywhere.
    let digest = sha2::Sha256::digest(b"H55-000000");
    assert_eq!(
        split_bucket("H55-000000").to_be_bytes(),
        [digest[0], digest[1], digest[2], digest[3]]
    );
    // A current unit, and an unsplit chain, restate the same for every dossier.
    assert_eq!(a.fixed(id(&a, "HEALTH")), Some(id(&a, "HEALTH2")));
    assert_eq!(a.fixed(id(&a, "HOME")), Some(id(&a, "HOME")));
}

#[test]
fn successor_lines_provinces_and_breaks() {
    let a = region();
    let (lab, health2, home, w1) = (
        id(&a, "LAB"),
        id(&a, "HEALTH2"),
        id(&a, "HOME"),
        id(&a, "W1"),
    );
    assert!(a.succeeds(lab, health2));
    assert!(a.succeeds(lab, home));
    assert!(!a.succeeds(home, lab));
    assert!(!a.succeeds(lab, w1));
    assert!(!a.succeeds(lab, lab));
    assert_eq!(a.code(a.province_of(Some(lab)).unwrap()), "P1");
    assert_eq!(a.code(a.province_of(Some(id(&a, "P1"))).unwrap()), "P1");
    // Unknown agencies count under the only current province, or the configured one.
    assert_eq!(a.code(a.province_of(None).unwrap()), "P2");
    let a = a.with_province("p1").unwrap();
    assert_eq!(a.code(a.province_of(None).unwrap()), "P1");
    let err = region().with_province("W1").unwrap_err();
    assert_eq!(
        err.to_string(),
        "aggregate.province: \"W1\" is not a province-level entry of the agency reference"
    );
    assert_eq!(
        region().breaks(),
        [(d("2025-03-01"), 1), (d("2025-07-01"), 3)]
    );
}

/// The error a reference gives, as text.
fn error(toml: &str) -> String {
    Agencies::from_toml(toml).unwrap_err().to_string()
}

const A: &str = "[[agencies]]\ncode = \"A\"\nname = \"A\"\nlevel = \"department\"\n";

#[test]
fn a_duplicate_code_names_both_entries() {
    let e = error(&format!("{A}\n{A}"));
    assert_eq!(
        e,
        "agency reference: code \"A\" appears twice with the same validity, at agencies[0] and agencies[1]; give a new version of a code its own valid_from"
    );
    // Spelled differently, the same code after trimming and upper-casing.
    let e = error(&format!(
        "{A}\n{}",
        A.replace("code = \"A\"", "code = \" a\"")
    ));
    assert!(e.contains("code \"A\" appears twice"), "{e}");
}

#[test]
fn overlapping_versions_name_both_ranges() {
    let toml = format!("{A}valid_to = 2025-06-30\n\n{A}valid_from = 2025-06-01\n");
    assert_eq!(
        error(&toml),
        "agency reference: code \"A\" at agencies[0] (… to 2025-06-30) and at agencies[1] (2025-06-01 to …): the validity ranges overlap; versions of one code must follow each other"
    );
    // Back to back is fine.
    let ok = toml.replace("2025-06-01", "2025-07-01");
    assert_eq!(Agencies::from_toml(&ok).unwrap().len(), 1);
    // Only the latest version may have successors.
    let b = "[[agencies]]\ncode = \"B\"\nname = \"B\"\nlevel = \"department\"\n";
    let e = error(&format!(
        "{A}valid_to = 2025-06-30\nsuccessors = [\"B\"]\n\n{A}valid_from = 2025-07-01\n\n{b}"
    ));
    assert_eq!(
        e,
        "agency reference, agencies[0] (code \"A\"): only the latest version of a code has successors, and agencies[1] is later"
    );
}

#[test]
fn an_unknown_successor_or_province_is_named() {
    let e = error(&format!(
        "{A}valid_to = 2025-06-30\nsuccessors = [\"nope\"]\n"
    ));
    assert_eq!(
        e,
        "agency reference, agencies[0] (code \"A\"): successor \"NOPE\" is not in the reference"
    );
    let e = error(&format!("{A}province = \"P\"\n"));
    assert_eq!(
        e,
        "agency reference, agencies[0] (code \"A\"): province \"P\" is not in the reference"
    );
    let b = "[[agencies]]\ncode = \"B\"\nname = \"B\"\nlevel = \"ward\"\n";
    let e = error(&format!("{A}province = \"B\"\n\n{b}"));
    assert_eq!(
        e,
        "agency reference, agencies[0] (code \"A\"): `province` \"B\" is not a province-level entry"
    );
}

#[test]
fn a_cycle_is_named_around() {
    let entry = |code: &str, next: &str| {
        format!("[[agencies]]\ncode = \"{code}\"\nname = \"{code}\"\nlevel = \"other\"\nvalid_to = 2025-06-30\nsuccessors = [\"{next}\"]\n")
    };
    let e = error(&format!(
        "{}{}{}",
        entry("A", "B"),
        entry("B", "C"),
        entry("C", "A")
    ));
    assert_eq!(
        e,
        "agency reference: successors form a cycle: A → B → C → A"
    );
    // An agency cannot succeed itself.
    let e = error(&entry("A", "A"));
    assert_eq!(
        e,
        "agency reference, agencies[0] (code \"A\"): an agency cannot succeed itself"
    );
}

#[test]
fn malformed_entries_name_the_field() {
    let cases = [
        (A.replace("level = \"department\"", "level = \"county\""), "`level` \"county\" is not one of \"province\", \"department\", \"district\", \"commune\", \"ward\", \"other\""),
        (A.replace("name = \"A\"\n", ""), "`name` is missing or empty"),
        (format!("{A}valid_to = \"30/06/2025\"\n"), "`valid_to` \"30/06/2025\" is not a date (YYYY-MM-DD)"),
        (format!("{A}valid_from = 2025-07-01\nvalid_to = 2025-06-30\n"), "`valid_to` 2025-06-30 is before `valid_from` 2025-07-01"),
        (format!("{A}colour = \"red\"\n"), "unknown field `colour`"),
        (format!("{A}illustrative = \"maybe\"\n"), "`illustrative` must be true or false, got \"maybe\""),
        (format!("{A}successors = [\"B\"]\n"), "`successors` without `valid_to`: an agency is succeeded when it ends"),
        (format!("{A}valid_to = 2025-06-30\nsuccessors = [{{ code = \"B\", share = 0.5 }}, {{ code = \"C\", share = 0.4 }}]\n"), "the shares add up to 0.9, not 1"),
        (format!("{A}valid_to = 2025-06-30\nsuccessors = [\"B\", \"C\"]\n"), "successor \"B\" needs a `share`: the dossiers of a split agency are shared out"),
        (format!("{A}valid_to = 2025-06-30\nsuccessors = [{{ code = \"B\", fields = [\"X\"], share = 0.5 }}, \"C\"]\n"), "successor \"B\" has both `fields` and `share`: it takes its fields whole"),
        (format!("{A}valid_to = 2025-06-30\nsuccessors = [{{ code = \"B\", fields = [\"X\"] }}]\n"), "every successor lists `fields`: one must take the dossiers of the other fields"),
        (format!("{A}valid_to = 2025-06-30\nsuccessors = [{{ code = \"B\", fields = [\"X\"] }}, {{ code = \"C\", fields = [\"x\"] }}, \"D\"]\n"), "field \"X\" goes to two successors"),
    ];
    for (toml, message) in cases {
        assert_eq!(
            error(&toml),
            format!("agency reference, agencies[0] (code \"A\"): {message}"),
            "{toml}"
        );
    }
    assert_eq!(
        error("[agencies]\ncode = 1\n"),
        "agency reference: `agencies` must be a list of tables"
    );
    assert!(error("[[agency]]\ncode = \"A\"\n").contains("unknown top-level key `agency`"));
}

/// The region as CSV: successors in one cell.
const REGION_CSV: &str =
    "code,name,level,province,valid_from,valid_to,successors,illustrative,source
P1,Old province,province,,,2025-06-30,P2,true,Resolution 202/2025/QH15
P2,New province,province,,,,,,
D1,District,district,P1,,2025-06-30,W1 share=0.25; W2 share=0.75,,
W1,Ward one,ward,P2,2025-07-01,,,,
W2,Ward two,ward,P2,2025-07-01,,,,
LAB,Labour,department,P1,,2025-02-28,\"HEALTH fields=btxh;HOME\",,
HEALTH,Health,department,P1,,2025-06-30,HEALTH2,,
HEALTH2,Health of the new province,department,P2,,,,,
HOME,Home affairs,department,P1,,,,,
 agri ,Agriculture,department,P1,,2025-02-28,,,
AGRI,Agriculture and Environment,department,P1,2025-03-01,,,,
";

/// The entries without their places in the file, to compare spellings.
fn without_places(a: &Agencies) -> Vec<Entry> {
    let mut v: Vec<Entry> = a
        .entries()
        .iter()
        .map(|e| Entry {
            at: String::new(),
            illustrative: false,
            source: None,
            ..e.clone()
        })
        .collect();
    v.sort_by(|a, b| (&a.code, a.valid_from).cmp(&(&b.code, b.valid_from)));
    v
}

#[test]
fn csv_and_parquet_spell_the_same_reference() {
    let csv = Agencies::from_csv(REGION_CSV.as_bytes()).unwrap();
    assert_eq!(without_places(&csv), without_places(&region()));
    assert!(csv.entries()[0].illustrative);
    assert_eq!(
        csv.entries()[0].source.as_deref(),
        Some("Resolution 202/2025/QH15")
    );
    assert_eq!(csv.entries()[5].successors[0].fields, ["BTXH"]);

    // The same table as Parquet, with real dates and a boolean.
    use arrow::array::{ArrayRef, BooleanArray, Date32Array, RecordBatch, StringArray};
    let rows: Vec<Vec<String>> = REGION_CSV
        .lines()
        .skip(1)
        .map(|l| {
            let mut r = csv::ReaderBuilder::new()
                .has_headers(false)
                .from_reader(l.as_bytes());
            r.records()
                .next()
                .unwrap()
                .unwrap()
                .iter()
                .map(String::from)
                .collect()
        })
        .collect();
    let text = |i: usize| -> ArrayRef {
        std::sync::Arc::new(StringArray::from(
            rows.iter()
                .map(|r| (!r[i].is_empty()).then(|| r[i].clone()))
                .collect::<Vec<_>>(),
        ))
    };
    let date = |i: usize| -> ArrayRef {
        std::sync::Arc::new(Date32Array::from(
            rows.iter()
                .map(|r| {
                    (!r[i].is_empty()).then(|| {
                        (d(&r[i]) - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days() as i32
                    })
                })
                .collect::<Vec<_>>(),
        ))
    };
    let flag: ArrayRef = std::sync::Arc::new(BooleanArray::from(
        rows.iter()
            .map(|r| (!r[7].is_empty()).then_some(true))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_from_iter([
        ("code", text(0)),
        ("name", text(1)),
        ("level", text(2)),
        ("province", text(3)),
        ("valid_from", date(4)),
        ("valid_to", date(5)),
        ("successors", text(6)),
        ("illustrative", flag),
    ])
    .unwrap();
    let mut buf = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let pq = Agencies::from_file("agencies.parquet", buf).unwrap();
    assert_eq!(without_places(&pq), without_places(&region()));
    assert!(pq.entries()[0].illustrative);
    assert_eq!(pq.entries()[3].at, "row 3");
}

#[test]
fn csv_errors_name_the_line() {
    let bad = REGION_CSV.replace("W2,Ward two,ward", "W2,Ward two,hamlet");
    assert_eq!(
        Agencies::from_csv(bad.as_bytes()).unwrap_err().to_string(),
        "agency reference, line 6 (code \"W2\"): `level` \"hamlet\" is not one of \"province\", \"department\", \"district\", \"commune\", \"ward\", \"other\""
    );
    let bad = REGION_CSV.replace("W1 share=0.25", "W1 portion=0.25");
    assert_eq!(
        Agencies::from_csv(bad.as_bytes()).unwrap_err().to_string(),
        "agency reference, line 4 (code \"D1\"): successor \"W1 portion=0.25\": \"portion=0.25\" is neither share=<fraction> nor fields=<codes>"
    );
    let bad = REGION_CSV.replace(
        "W1,Ward one,ward,P2,2025-07-01",
        "D1,Ward one,ward,P2,2025-06-01",
    );
    assert!(Agencies::from_csv(bad.as_bytes())
        .unwrap_err()
        .to_string()
        .contains("code \"D1\" at line 4 (… to 2025-06-30) and at line 5 (2025-06-01 to …)"));
    let bad = REGION_CSV.replace("illustrative,source", "illustrative,remark");
    assert_eq!(
        Agencies::from_csv(bad.as_bytes()).unwrap_err().to_string(),
        "agency reference: unknown column `remark`; the columns are code, name, level, province, valid_from, valid_to, successors, illustrative, source"
    );
}

/// The README's example reference ("Agencies as they were and as they are"): its first
/// TOML block.
fn readme_example() -> &'static str {
    let readme = include_str!("../../../../README.md");
    let section = &readme[readme
        .find("### Agencies as they were and as they are")
        .expect("the README section")..];
    let block = &section[section.find("```toml\n").expect("a TOML example") + 8..];
    &block[..block.find("```").expect("the example's end")]
}

#[test]
fn the_readme_example_loads_and_restates_as_it_says() {
    let a = Agencies::from_toml(readme_example()).unwrap();
    assert_eq!(a.len(), 8);
    let p = a.default_province().unwrap();
    assert_eq!(a.name(p), "Tỉnh Đồng Tháp");
    // Old Tiền Giang restates into the new Đồng Tháp.
    let tg = id(&a, "000.00.00.H55");
    assert_eq!(a.fixed(tg), Some(p));
    // The district's dossiers go whole to one of the two wards, by their codes' hash,
    // about 60:40.
    let district = id(&a, "000.20.10.H55");
    let to_first = (0..2000)
        .filter(|i| a.code(a.restate(district, None, &format!("H-{i}"))) == "000.40.10.H20")
        .count();
    assert!((1100..1300).contains(&to_first), "{to_first} of 2000");
    assert_eq!(a.breaks(), [(d("2025-03-01"), 1), (d("2025-07-01"), 2)]);
    // The split department: social protection to Health, everything else to Home Affairs.
    let labour = id(&a, "000.00.18.H55");
    assert_eq!(
        a.code(a.restate(labour, Some("BTXH"), "x")),
        "000.00.14.H55"
    );
    assert_eq!(
        a.code(a.restate(labour, Some("LDVL"), "x")),
        "000.00.19.H55"
    );
    assert!(a.succeeds(labour, id(&a, "000.00.14.H55")));
}
