//! A dossier's `DongBoHoSoMC` message as it stood at one moment, with the dirt of its
//! agency's software.

use unicode_normalization::UnicodeNormalization;

use super::life::Dossier;
use super::plan::{field_of, Agency};
use super::{fmt, HOUR};

/// A JSON string literal.
fn js(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// The `DongBoHoSoMC` message of a dossier as it stood at `at`, after `status`, sent by
/// the software of agency `holder` (the habits are `a`'s, the agency that received it).
/// Written out directly: building `serde_json::Value`s cost most of the generator's time.
pub(super) fn snapshot(
    d: &Dossier,
    a: &Agency,
    holder: &str,
    at: i64,
    status: u8,
    updating: bool,
) -> String {
    use std::fmt::Write as _;
    let text = |s: &str| {
        js(&if a.messy {
            s.nfd().collect::<String>()
        } else {
            s.to_string()
        })
    };
    let code = if a.messy {
        format!(" {} ", d.code.to_lowercase())
    } else {
        d.code.clone()
    };
    // Messy agencies' software sends the field's code but not its name.
    let (field_code, field_name) = field_of(&d.procedure.code);
    let field = if a.messy {
        format!(r#""MaLinhVuc":{}"#, js(&field_code.to_lowercase()))
    } else {
        format!(
            r#""MaLinhVuc":{},"TenLinhVuc":{}"#,
            js(field_code),
            text(field_name)
        )
    };
    let mut r = String::with_capacity(1400);
    let _ = write!(
        r,
        r#"{{"service":"DongBoHoSoMC","isUpdating":{updating},"data":[{{"MaHoSo":{},"MaTTHC":{},"TenTTHC":{},{},"DonViXuLy":{},"KenhThucHien":{},"ChuHoSo":"Nguyễn Văn A","LoaiDoiTuong":1,"SoGiayToChuHoSo":"{}","NgayNopHoSo":"{}","NgayTiepNhan":"{}","NgayHenTra":"{}","TrangThaiHoSo":{status},"HoSoCoThanhPhanSoHoa":{},"DuocThanhToanTrucTuyen":{},"#,
        js(&code),
        js(&d.procedure.code),
        text(&d.procedure.name),
        field,
        js(holder),
        d.channel,
        d.applicant_id,
        fmt(d.received - HOUR),
        fmt(d.received),
        fmt(d.due_at(at)),
        u8::from(d.digitized_component),
        if d.paid_online { 2 } else { 0 },
    );
    let _ = write!(
        r,
        r#""TaiLieuNop":[{{"TepDinhKemId":"f-1","TenTepDinhKem":{},"IsDeleted":false,"MaThanhPhanHoSo":"TP1","DuongDanTaiTepTin":{},"DuocSoHoa":{},"DuocTaiSuDung":{},"DuocLayTuKhoDMQG":0}}],"DanhSachLePhi":[{{"TenPhiLePhi":"Lệ phí","MaPhiLePhi":"LP1","HinhThucThu":1,"Gia":{},"LoaiPhiLePhi":1}}],"DanhSachHoSoBoSung":["#,
        text("Tờ khai.pdf"),
        if d.submitted_file {
            r#""https://files.example.invalid/f-1""#
        } else {
            "null"
        },
        u8::from(d.digitized_component),
        u8::from(d.reused),
        d.fee,
    );
    let mut first = true;
    for (asked, answered, moved) in d.supplements.iter().filter(|s| s.0 <= at) {
        if !first {
            r.push(',');
        }
        first = false;
        let _ = write!(
            r,
            r#"{{"NgayBoSung":"{}","NoiDungBoSung":{}"#,
            fmt(*asked),
            text("Bổ sung giấy tờ")
        );
        if let Some(ans) = answered.filter(|t| *t <= at) {
            let _ = write!(r, r#","NgayTiepNhanBoSung":"{}""#, fmt(ans));
            if let Some((before, after)) = moved {
                let _ = write!(
                    r,
                    r#","NgayHenTraTruoc":"{}","NgayHenTraMoi":"{}""#,
                    fmt(*before),
                    fmt(*after)
                );
            }
        }
        r.push('}');
    }
    r.push(']');
    if let Some(f) = d.finished.filter(|t| *t <= at) {
        let _ = write!(r, r#","NgayKetThucXuLy":"{}""#, fmt(f));
        if d.procedure.result_is_document {
            let link = if d.e_result {
                r#""https://files.example.invalid/r-1""#
            } else {
                "null"
            };
            let _ = write!(
                r,
                r#","DanhSachGiayToKetQua":[{{"TenGiayTo":{},"GiayToId":"r-1","DuongDanTepTinKetQua":{link}}}]"#,
                text("Kết quả")
            );
        } else {
            r.push_str(r#","DanhSachGiayToKetQua":[]"#);
        }
    }
    if let Some(t) = d.returned.filter(|t| *t <= at) {
        let _ = write!(r, r#","NgayTra":"{}""#, fmt(t));
    }
    if let Some(t) = d.refused.filter(|t| *t <= at) {
        let _ = write!(r, r#","NgayTuChoi":"{}""#, fmt(t));
    }
    r.push_str("}]}");
    r
}
