//! What the benchmarks share: the national sync record they ingest and encode.

/// A live feed: events of two days, as a day's sync traffic is (a backfill of years is a
/// different shape, with many date partitions per flush).
pub fn record(i: usize) -> String {
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
