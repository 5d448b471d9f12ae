//! Decode + normalize throughput on one core, on realistic national sync records of
//! about 1.5 KB, against `serde_json` parsing the same bytes into `serde_json::Value`.
//!
//! Run: `cargo bench -p sohoa-schemas --bench decode` (release profile). It prints MB/s,
//! events/s and the ratio to the `Value` baseline measured in the same run.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sohoa_schemas::{
    build_decoder, DecodeOutput, DecoderContext, DecoderKind, EventBatchBuilder, Lineage,
    Pseudonymizer,
};

/// A small deterministic PRNG, so every run decodes the same corpus.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

const PROCEDURES: &[(&str, &str, &str)] = &[
    ("1.001193", "Đăng ký khai sinh", "HTTP"),
    (
        "1.004227",
        "Cấp giấy phép xây dựng đối với nhà ở riêng lẻ",
        "XD",
    ),
    (
        "2.000908",
        "Chứng thực bản sao từ bản chính giấy tờ, văn bản",
        "CT",
    ),
    ("1.001612", "Đăng ký thành lập hộ kinh doanh", "TLDN"),
    (
        "1.003003",
        "Đăng ký biến động quyền sử dụng đất, quyền sở hữu tài sản gắn liền với đất",
        "DD",
    ),
];
const NAMES: &[&str] = &[
    "Nguyễn Văn An",
    "Trần Thị Bình",
    "Lê Văn Cường",
    "Phạm Thị Dung",
    "Huỳnh Minh Đức",
];

fn record(rng: &mut Rng, i: u64) -> String {
    let (code, name, field) = PROCEDURES[rng.below(PROCEDURES.len() as u64) as usize];
    let agency = format!("000.00.{:02}.H55", 10 + rng.below(12));
    let day = 1 + rng.below(28);
    let status = 1 + rng.below(10);
    let docs: Vec<String> = (0..1 + rng.below(3))
        .map(|d| {
            format!(
                r#"{{"TepDinhKemId":"f-{i}-{d}","TenTepDinhKem":"tai_lieu_{d}.pdf","IsDeleted":{},"MaThanhPhanHoSo":"TP{d}","DuongDanTaiTepTin":"https://files.example.invalid/{i}/{d}","DuocSoHoa":{},"DuocTaiSuDung":{},"DuocLayTuKhoDMQG":0}}"#,
                rng.below(10) == 0,
                rng.below(2),
                rng.below(4) == 0,
            )
        })
        .collect();
    let supplement = if rng.below(5) == 0 {
        format!(
            r#"{{"HoSoBoSungId":"bs-{i}","NguoiYeuCauBoSung":"Cán bộ A","NoiDungBoSung":"Bổ sung giấy tờ","NgayBoSung":"202303{:02}090000","NgayTiepNhanBoSung":"202303{:02}090000","TrangThaiBoSung":2,"NgayHenTraTruoc":"20230320170000","NgayHenTraMoi":"20230324170000"}}"#,
            day.min(20),
            day.min(20) + 3
        )
    } else {
        String::new()
    };
    format!(
        r#"{{"MaHoSo":"{agency}-2303{day:02}-{i:04}","MaTTHC":"{code}","TenTTHC":"{name}","MaLinhVuc":"{field}","TenLinhVuc":"Lĩnh vực {field}","KenhThucHien":{},"ChuHoSo":"{}","LoaiDoiTuong":1,"SoGiayToChuHoSo":"0821{:08}","SoDienThoai":"0912{:06}","Email":"cd{i}@example.invalid","TrichYeuHoSo":"{name} cho công dân","NgayNopHoSo":"202303{day:02}071500","NgayTiepNhan":"202303{day:02}080512","NgayHenTra":"202303{:02}163000","NgayKetThucXuLy":"202303{:02}100000","NgayTra":"","TrangThaiHoSo":{status},"DonViXuLy":"{agency}","HoSoCoThanhPhanSoHoa":{},"DuocThanhToanTrucTuyen":{},"TaiLieuNop":[{}],"DanhSachLePhi":[{{"TenPhiLePhi":"Lệ phí","MaPhiLePhi":"LP1","HinhThucThu":1,"Gia":{},"LoaiPhiLePhi":1}}],"DanhSachHoSoBoSung":[{supplement}],"DanhSachGiayToKetQua":[{{"TenGiayTo":"Kết quả","MaThanhPhanHoSo":"KQ1","GiayToId":"r-{i}","DuongDanTepTinKetQua":"https://files.example.invalid/r-{i}","MaGiayToKetQua":"KQ-{i}"}}]}}"#,
        1 + rng.below(2),
        rng.pick(NAMES),
        rng.below(100_000_000),
        rng.below(1_000_000),
        (day + 3).min(28),
        (day + 2).min(28),
        rng.below(2),
        rng.below(3),
        docs.join(","),
        [0, 15_000, 75_000][rng.below(3) as usize],
    )
}

fn measure(label: &str, bytes: usize, events: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm up caches and lazily built schemas
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
    }
    let secs = best.as_secs_f64();
    let mbps = bytes as f64 / secs / 1e6;
    println!(
        "{label:<44} {mbps:>8.1} MB/s  {:>10.0} events/s",
        events as f64 / secs
    );
    mbps
}

fn main() {
    let mut rng = Rng(0x5eed_50fa);
    let n = 20_000;
    let corpus: Vec<Vec<u8>> = (0..n).map(|i| record(&mut rng, i).into_bytes()).collect();
    let bytes: usize = corpus.iter().map(Vec::len).sum();
    println!(
        "corpus: {n} national sync records, {:.1} MB, mean {} bytes per record",
        bytes as f64 / 1e6,
        bytes / n as usize
    );

    let decoder = build_decoder(
        DecoderKind::Dvcqg,
        DecoderContext {
            source_system: Arc::from("dvcqg"),
            pseudonymizer: Arc::new(Pseudonymizer::new(b"benchmark-key-0123456789").unwrap()),
        },
    );
    // Sanity: the corpus decodes cleanly, or the figure would measure the error path.
    let mut out = DecodeOutput::default();
    let mut decoded = 0;
    for m in &corpus {
        out.clear();
        decoder.decode(m, &mut out);
        assert!(out.rejects.is_empty(), "{:?}", out.rejects);
        decoded += out.events.len();
    }
    assert_eq!(decoded, n as usize);

    let baseline = measure(
        "serde_json -> serde_json::Value (baseline)",
        bytes,
        n as usize,
        || {
            for m in &corpus {
                black_box(serde_json::from_slice::<serde_json::Value>(m).unwrap());
            }
        },
    );
    let ours = measure("dvcqg decode + normalize", bytes, n as usize, || {
        let mut out = DecodeOutput::default();
        for m in &corpus {
            out.clear();
            decoder.decode(m, &mut out);
            black_box(&out.events);
        }
    });
    let lineage = Lineage {
        topic: "dossiers",
        partition: 0,
        offset: 0,
        ingested_at: 0,
        arrived_at: 0,
    };
    let with_arrow = measure(
        "dvcqg decode + normalize + Arrow append",
        bytes,
        n as usize,
        || {
            let mut builder = EventBatchBuilder::new();
            let mut out = DecodeOutput::default();
            for m in &corpus {
                out.clear();
                decoder.decode(m, &mut out);
                for e in &out.events {
                    builder.append(e, &lineage);
                }
            }
            black_box(builder.finish().unwrap());
        },
    );
    println!(
        "ratio to the Value baseline: decode+normalize {:.2}x, with Arrow append {:.2}x",
        ours / baseline,
        with_arrow / baseline
    );
}
