//! What the benchmarks share: the national sync record they ingest and encode.

/// A live feed: events of two days, as a day's sync traffic is (a backfill of years is a
/// different shape, with many date partitions per flush).
#[allow(dead_code)] // The ingest bench calls `record_over`.
pub fn record(i: usize) -> String {
    record_over(i, 2)
}

/// Record `i` of a feed whose events spread over `dates` consecutive days from 2023-03-05,
/// record by record in turn: late syncs and backfills scatter a partition's events over
/// many dates, and each date is a buffer of its own. With 2, the feed of [`record`].
pub fn record_over(i: usize, dates: usize) -> String {
    let filed = chrono::NaiveDate::from_ymd_opt(2023, 3, 1).expect("a date")
        + chrono::Days::new((i % dates.max(1)) as u64);
    let day = |days: u64| (filed + chrono::Days::new(days)).format("%Y%m%d");
    let yymmdd = filed.format("%y%m%d");
    let agency = 10 + i % 12;
    format!(
        r#"{{"MaHoSo":"000.00.{agency:02}.H55-{yymmdd}-{i:07}","MaTTHC":"1.004227","TenTTHC":"Cấp giấy phép xây dựng đối với nhà ở riêng lẻ","MaLinhVuc":"XD","TenLinhVuc":"Xây dựng","KenhThucHien":{},"ChuHoSo":"Trần Thị Bình","LoaiDoiTuong":1,"SoGiayToChuHoSo":"0821{i:08}","SoDienThoai":"0912000001","Email":"b{i}@example.invalid","TrichYeuHoSo":"Xin cấp phép xây dựng nhà ở","NgayNopHoSo":"{}071500","NgayTiepNhan":"{}080512","NgayHenTra":"{}163000","NgayKetThucXuLy":"{}100000","NgayTra":"","TrangThaiHoSo":{},"DonViXuLy":"000.00.{agency:02}.H55","HoSoCoThanhPhanSoHoa":{},"DuocThanhToanTrucTuyen":2,"TaiLieuNop":[{{"TepDinhKemId":"f-{i}-1","TenTepDinhKem":"don.pdf","IsDeleted":false,"MaThanhPhanHoSo":"TP1","DuongDanTaiTepTin":"https://files.example.invalid/{i}/1","DuocSoHoa":1,"DuocTaiSuDung":0,"DuocLayTuKhoDMQG":0}},{{"TepDinhKemId":"f-{i}-2","TenTepDinhKem":"ban_ve.pdf","IsDeleted":false,"MaThanhPhanHoSo":"TP2","DuongDanTaiTepTin":"https://files.example.invalid/{i}/2","DuocSoHoa":0,"DuocTaiSuDung":0,"DuocLayTuKhoDMQG":0}}],"DanhSachLePhi":[{{"TenPhiLePhi":"Lệ phí cấp giấy phép xây dựng","MaPhiLePhi":"LP1","HinhThucThu":1,"Gia":75000,"LoaiPhiLePhi":1}}],"DanhSachHoSoBoSung":[],"DanhSachGiayToKetQua":[{{"TenGiayTo":"Giấy phép xây dựng","MaThanhPhanHoSo":"KQ1","GiayToId":"r-{i}","DuongDanTepTinKetQua":"https://files.example.invalid/r-{i}","MaGiayToKetQua":"KQ-{i}"}}]}}"#,
        1 + i % 2,
        day(0),
        day(0),
        day(5),
        day(4),
        1 + i % 10,
        i % 2,
    )
}
