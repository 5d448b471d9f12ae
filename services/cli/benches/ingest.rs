//! Ingest throughput of `sohoa ingest` against a bare consume of the same topic, in the
//! same run: `kcat -C -e` when kcat is installed, and always a bare librdkafka consumer
//! loop. Then the same with 2 and 3 replicas in one group, for scaling. Everything reads
//! from librdkafka's mock cluster in this process.
//!
//! Run: `cargo bench -p sohoa --bench ingest` (release). `SOHOA_BENCH_MESSAGES` sets the
//! topic size (default 1,000,000 national sync records of about 1.5 KB) and
//! `SOHOA_BENCH_REPLICAS` the replica counts (default `1,2,3`), `SOHOA_BENCH_BUFFER_BYTES`
//! each replica's `buffer.max_bytes` (default 128 MB) and `SOHOA_BENCH_FLUSH_AGE_MS` its
//! `flush.max_age_ms` (default 3000).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

const TOPIC: &str = "bench.dossiers";
// The mock cluster keeps about 5 MB per partition: spread the topic wide enough that
// nothing is deleted before it is read (checked below through the low watermarks).
const PARTITIONS: i32 = 512;

/// A live feed: events of two days, as a day's sync traffic is (a backfill of years is a
/// different shape, with many date partitions per flush).
fn record(i: usize) -> String {
    let day = 1 + i % 2;
    let agency = 10 + i % 12;
    format!(
        r#"{{"MaHoSo":"000.00.{agency:02}.H55-2303{day:02}-{i:07}","MaTTHC":"1.004227","TenTTHC":"Cấp giấy phép xây dựng đối với nhà ở riêng lẻ","MaLinhVuc":"XD","TenLinhVuc":"Xây dựng","KenhThucHien":{},"ChuHoSo":"Trần Thị Bình","LoaiDoiTuong":1,"SoGiayToChuHoSo":"0821{i:08}","SoDienThoai":"0912000001","Email":"b{i}@example.invalid","TrichYeuHoSo":"Xin cấp phép xây dựng nhà ở","NgayNopHoSo":"202303{day:02}071500","NgayTiepNhan":"202303{day:02}080512","NgayHenTra":"202303{:02}163000","NgayKetThucXuLy":"202303{:02}100000","NgayTra":"","TrangThaiHoSo":{},"DonViXuLy":"000.00.{agency:02}.H55","HoSoCoThanhPhanSoHoa":{},"DuocThanhToanTrucTuyen":2,"TaiLieuNop":[{{"TepDinhKemId":"f-{i}-1","TenTepDinhKem":"don.pdf","IsDeleted":false,"MaThanhPhanHoSo":"TP1","DuongDanTaiTepTin":"https://files.example.invalid/{i}/1","DuocSoHoa":1,"DuocTaiSuDung":0,"DuocLayTuKhoDMQG":0}},{{"TepDinhKemId":"f-{i}-2","TenTepDinhKem":"ban_ve.pdf","IsDeleted":false,"MaThanhPhanHoSo":"TP2","DuongDanTaiTepTin":"https://files.example.invalid/{i}/2","DuocSoHoa":0,"DuocTaiSuDung":0,"DuocLayTuKhoDMQG":0}}],"DanhSachLePhi":[{{"TenPhiLePhi":"Lệ phí cấp giấy phép xây dựng","MaPhiLePhi":"LP1","HinhThucThu":1,"Gia":75000,"LoaiPhiLePhi":1}}],"DanhSachHoSoBoSung":[],"DanhSachGiayToKetQua":[{{"TenGiayTo":"Giấy phép xây dựng","MaThanhPhanHoSo":"KQ1","GiayToId":"r-{i}","DuongDanTepTinKetQua":"https://files.example.invalid/r-{i}","MaGiayToKetQua":"KQ-{i}"}}]}}"#,
        1 + i % 2,
        (day + 5).min(28),
        (day + 4).min(28),
        1 + i % 10,
        i % 2,
    )
}

fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn scrape(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

fn committed_messages(body: &str) -> u64 {
    body.lines()
        .filter(|l| l.starts_with("sohoa_ingest_messages_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn main() {
    let n: usize = std::env::var("SOHOA_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let mock = MockCluster::new(1).expect("mock cluster");
    mock.create_topic(TOPIC, PARTITIONS, 1).unwrap();
    mock.create_topic("sohoa.dead-letters", 1, 1).unwrap();
    let brokers = mock.bootstrap_servers();

    let t = Instant::now();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .create()
        .unwrap();
    let mut bytes = 0usize;
    for i in 0..n {
        let payload = record(i);
        bytes += payload.len();
        let key = format!("{i}");
        let mut rec = BaseRecord::to(TOPIC)
            .payload(payload.as_str())
            .key(key.as_str());
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    producer.poll(Duration::from_millis(5));
                    rec = back;
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120)).unwrap();
    println!(
        "topic: {n} messages, {:.0} MB, mean {} bytes, {PARTITIONS} partitions (produced in {:.1}s)",
        bytes as f64 / 1e6,
        bytes / n,
        t.elapsed().as_secs_f64()
    );
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let mut total = 0;
    for p in 0..PARTITIONS {
        let (lo, hi) = probe
            .fetch_watermarks(TOPIC, p, Duration::from_secs(10))
            .unwrap();
        assert_eq!(
            lo, 0,
            "partition {p} lost messages to the mock cluster's retention"
        );
        total += hi;
    }
    assert_eq!(total as usize, n);

    // Reference 1: kcat, if installed.
    let kcat_secs = Command::new("kcat")
        .arg("-V")
        .stdout(Stdio::null())
        .status()
        .ok()
        .map(|_| {
            let t = Instant::now();
            let status = Command::new("kcat")
                .args([
                    "-C",
                    "-b",
                    &brokers,
                    "-t",
                    TOPIC,
                    "-e",
                    "-q",
                    "-o",
                    "beginning",
                ])
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success());
            t.elapsed().as_secs_f64()
        });

    // Reference 2: a bare librdkafka consumer loop that touches every payload.
    let t = Instant::now();
    let bare: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "bench-bare")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    bare.subscribe(&[TOPIC]).unwrap();
    let (mut got, mut sum) = (0usize, 0u64);
    while got < n {
        if let Some(Ok(m)) = bare.poll(Duration::from_millis(100)) {
            use rdkafka::Message;
            got += 1;
            sum += m.payload().map_or(0, |p| p[p.len() / 2] as u64);
        }
    }
    let bare_secs = t.elapsed().as_secs_f64();
    std::hint::black_box(sum);
    drop(bare);

    // The ingestor, as separate processes in one group, until every message is committed
    // in storage: once with one replica, then with more (SOHOA_BENCH_REPLICAS, "1,2,3").
    let replicas: Vec<usize> = std::env::var("SOHOA_BENCH_REPLICAS")
        .unwrap_or_else(|_| "1,2,3".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let runs: Vec<(usize, f64, u64)> = replicas
        .iter()
        .map(|&r| {
            let (secs, peak_kb) = ingest(&brokers, r, n);
            (r, secs, peak_kb)
        })
        .collect();

    let mb = bytes as f64 / 1e6;
    let line = |label: &str, secs: f64| {
        println!(
            "{label:<40} {secs:>7.2} s {:>9.0} msg/s {:>7.1} MB/s",
            n as f64 / secs,
            mb / secs
        )
    };
    if let Some(s) = kcat_secs {
        line("kcat -C -e > /dev/null", s);
    } else {
        println!("kcat: not installed (apt-get install kcat), skipped");
    }
    line("bare librdkafka consumer loop", bare_secs);
    for (r, secs, peak_kb) in &runs {
        line(
            &format!("sohoa ingest, {r} replica(s), to committed Parquet"),
            *secs,
        );
        let kcat = kcat_secs.map_or("-".to_string(), |k| format!("{:.2}", k / secs));
        println!(
            "    ratio to kcat {kcat}, to the bare consumer {:.2}; peak RSS per replica {:.0} MB",
            bare_secs / secs,
            *peak_kb as f64 / 1024.0
        );
    }
}

/// Run `replicas` ingestor processes in a fresh group and storage until every message is
/// committed. Returns the seconds taken and the largest peak RSS of one replica, in KB.
fn ingest(brokers: &str, replicas: usize, n: usize) -> (f64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bench.toml");
    std::fs::write(
        &cfg,
        format!("[[topics]]\nname = \"{TOPIC}\"\ndecoder = \"dvcqg\"\n"),
    )
    .unwrap();
    let group = format!("bench-{replicas}");
    let t = Instant::now();
    let mut children: Vec<(std::process::Child, u16)> = (0..replicas)
        .map(|_| {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let child = Command::new(env!("CARGO_BIN_EXE_sohoa"))
                .arg("ingest")
                .arg("--config")
                .arg(&cfg)
                .env("SOHOA__KAFKA__BROKERS", brokers)
                .env("SOHOA__KAFKA__GROUP_ID", &group)
                .env("SOHOA__STORAGE__ROOT", dir.path().join("data"))
                .env("SOHOA__PRIVACY__DEVELOPMENT_MODE", "true")
                .env("SOHOA__HTTP__LISTEN", format!("127.0.0.1:{port}"))
                .env("SOHOA__LOG__LEVEL", "error")
                .env(
                    "SOHOA__FLUSH__MAX_AGE_MS",
                    std::env::var("SOHOA_BENCH_FLUSH_AGE_MS").unwrap_or_else(|_| "3000".into()),
                )
                .env(
                    "SOHOA__BUFFER__MAX_BYTES",
                    std::env::var("SOHOA_BENCH_BUFFER_BYTES")
                        .unwrap_or_else(|_| "134217728".into()),
                )
                .env("SOHOA__FLUSH__MAX_BYTES", "16777216")
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap();
            (child, port)
        })
        .collect();
    let mut peak_kb = 0;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        for (child, _) in &children {
            peak_kb = peak_kb.max(vm_hwm_kb(child.id()).unwrap_or(0));
        }
        let done: u64 = children
            .iter()
            .filter_map(|(_, port)| scrape(*port).map(|b| committed_messages(&b)))
            .sum();
        if done >= n as u64 {
            break;
        }
        for (child, _) in &mut children {
            assert!(
                child.try_wait().unwrap().is_none(),
                "an ingestor exited early"
            );
        }
    }
    let secs = t.elapsed().as_secs_f64();
    for (child, _) in &mut children {
        peak_kb = peak_kb.max(vm_hwm_kb(child.id()).unwrap_or(0));
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
    }
    for (child, _) in &mut children {
        assert!(child.wait().unwrap().success());
    }
    (secs, peak_kb)
}
