//! The national sync feed (DVCQG): `DongBoHoSoMC` snapshots and `CapNhatTienDoHoSoMC`
//! progress updates.
//!
//! One message may be a bare record, an array of records, or an envelope
//! `{"service": ..., "data": [...]}`; each record becomes one event, or one rejection with
//! the path of the field at fault. A progress item either is a step itself or carries its
//! steps in `QuaTrinhXuLy`; each step becomes one `progress` event.

use std::borrow::Cow;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::raw::{raw_object, Raw, RawList};
use super::scan::{self, Reader, Scan};
use super::{DecodeOutput, Decoder, DecoderContext, DecoderKind};
use crate::error::{DecodeError, Loc, Reason};
use crate::event::{
    ApplicantType, Channel, DossierEvent, EventKind, Flags, Micros, Status, Supplement,
};
use crate::normalize::{self, Warning, Warnings};

raw_object! {
    /// A record, a progress item or an envelope: the service name may come after `data`,
    /// so one shape holds the fields of all three and the decoder tells them apart.
    RawNode {
        "service" => service: Raw<'a>,
        "data" => data: RawList<RawNode<'a>>,
        "MaHoSo" => ma_ho_so: Raw<'a>,
        "MaTTHC" => ma_tthc: Raw<'a>,
        "TenTTHC" => ten_tthc: Raw<'a>,
        "MaLinhVuc" => ma_linh_vuc: Raw<'a>,
        "TenLinhVuc" => ten_linh_vuc: Raw<'a>,
        "DonViXuLy" => don_vi_xu_ly: Raw<'a>,
        "KenhThucHien" => kenh_thuc_hien: Raw<'a>,
        "SoGiayToChuHoSo" => so_giay_to: Raw<'a>,
        "LoaiDoiTuong" => loai_doi_tuong: Raw<'a>,
        "DinhDanhCHS" => dinh_danh: RawList<RawIdent<'a>>,
        "NgayNopHoSo" => ngay_nop: Raw<'a>,
        "NgayTiepNhan" => ngay_tiep_nhan: Raw<'a>,
        "NgayHenTra" => ngay_hen_tra: Raw<'a>,
        "NgayKetThucXuLy" => ngay_ket_thuc: Raw<'a>,
        "NgayTra" => ngay_tra: Raw<'a>,
        "NgayTuChoi" => ngay_tu_choi: Raw<'a>,
        "TrangThaiHoSo" => trang_thai_ho_so: Raw<'a>,
        "TaiLieuNop" => tai_lieu_nop: RawList<RawDoc<'a>>,
        "DanhSachLePhi" => le_phi: RawList<RawFee<'a>>,
        "DanhSachHoSoBoSung" => bo_sung: RawList<RawSupplement<'a>>,
        "DanhSachGiayToKetQua" => ket_qua: RawList<RawResult<'a>>,
        "HoSoCoThanhPhanSoHoa" => co_so_hoa: Raw<'a>,
        "DuocThanhToanTrucTuyen" => thanh_toan: Raw<'a>,
        "QuaTrinhXuLy" => qua_trinh: RawList<RawNode<'a>>,
        "ThoiDiemXuLy" => thoi_diem_xu_ly: Raw<'a>,
        "TrangThai" => trang_thai: Raw<'a>,
        "NgayBatDau" => ngay_bat_dau: Raw<'a>,
        "NgayKetThucTheoQuyDinh" => ngay_ket_thuc_quy_dinh: Raw<'a>,
    }
    skip [
        // Envelope flag with no meaning for an upsert stream.
        "isUpdating",
        // Personal data: never read, never stored.
        "ChuHoSo", "Email", "Fax", "SoDienThoai", "MaDoiTuong", "TaiKhoanDuocXacThucVoiVNeID",
        "NguoiXuLy", "ChucDanh",
        // Free text, which may hold personal data.
        "TrichYeuHoSo", "ThongTinKhac", "GhiChu", "ThongTinTra", "NoiDungXuLy",
        // Known, not used by any indicator.
        "NoiNopHoSo", "HinhThuc", "DanhSachTepDinhKemKhac", "DSKetNoiCSDL", "PhongBanXuLy",
    ]
}

raw_object! {
    RawIdent {
        "SoDinhDanh" => so_dinh_danh: Raw<'a>,
    }
    skip ["LoaiDinhDanh"]
}

raw_object! {
    RawDoc {
        "TepDinhKemId" => file_id: Raw<'a>,
        "IsDeleted" => is_deleted: Raw<'a>,
        "DuongDanTaiTepTin" => file_link: Raw<'a>,
        "DuocSoHoa" => digitized: Raw<'a>,
        "DuocTaiSuDung" => reused: Raw<'a>,
        "DuocLayTuKhoDMQG" => from_warehouse: Raw<'a>,
    }
    skip ["TenTepDinhKem", "MaThanhPhanHoSo", "MaKetQuaThayThe"]
}

raw_object! {
    RawFee {
        "Gia" => price: Raw<'a>,
    }
    skip ["TenPhiLePhi", "MaPhiLePhi", "HinhThucThu", "LoaiPhiLePhi"]
}

raw_object! {
    RawSupplement {
        "NgayBoSung" => requested: Raw<'a>,
        "NgayTiepNhanBoSung" => completed: Raw<'a>,
        "NgayHenTraTruoc" => due_before: Raw<'a>,
        "NgayHenTraMoi" => due_after: Raw<'a>,
    }
    skip ["HoSoBoSungId", "NguoiYeuCauBoSung", "NoiDungBoSung", "TrangThaiBoSung"]
}

raw_object! {
    RawResult {
        "DuongDanTepTinKetQua" => file_link: Raw<'a>,
    }
    skip ["TenGiayTo", "MaThanhPhanHoSo", "GiayToId", "MaGiayToKetQua"]
}

/// The message as a whole: an object (record or envelope), an array, or junk.
#[derive(Debug)]
enum RawTop<'a> {
    Object(Box<RawNode<'a>>),
    Array(Vec<RawNode<'a>>),
    Other(Raw<'a>),
}

impl<'a> Deserialize<'a> for RawTop<'a> {
    fn deserialize<D: Deserializer<'a>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'a> Visitor<'a> for V {
            type Value = RawTop<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a record, an array of records, or an envelope")
            }
            fn visit_map<A: MapAccess<'a>>(self, map: A) -> Result<RawTop<'a>, A::Error> {
                RawNode::from_map(map).map(|n| RawTop::Object(Box::new(n)))
            }
            fn visit_seq<A: SeqAccess<'a>>(self, mut seq: A) -> Result<RawTop<'a>, A::Error> {
                let mut items = Vec::new();
                while let Some(n) = seq.next_element()? {
                    items.push(n);
                }
                Ok(RawTop::Array(items))
            }
            fn visit_bool<E>(self, v: bool) -> Result<RawTop<'a>, E> {
                Ok(RawTop::Other(Raw::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<RawTop<'a>, E> {
                Ok(RawTop::Other(Raw::Int(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<RawTop<'a>, E> {
                Ok(RawTop::Other(Raw::from_u64(v)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<RawTop<'a>, E> {
                Ok(RawTop::Other(Raw::Float(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<RawTop<'a>, E> {
                Ok(RawTop::Other(Raw::Str(Cow::Owned(v.to_owned()))))
            }
            fn visit_unit<E>(self) -> Result<RawTop<'a>, E> {
                Ok(RawTop::Other(Raw::Null))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'a> Scan<'a> for RawTop<'a> {
    fn scan(r: &mut Reader<'a>) -> Option<Self> {
        match r.peek()? {
            b'{' => RawNode::scan(r).map(|n| RawTop::Object(Box::new(n))),
            b'[' => r.list().map(RawTop::Array),
            _ => Raw::scan(r).map(RawTop::Other),
        }
    }
}

/// Whether the fast reader and serde_json read `text` alike, where the fast reader reads
/// it at all. For the differential tests and the fuzz target; not part of the API.
#[doc(hidden)]
pub fn readers_agree(text: &str) -> Result<(), String> {
    let Some(fast) = scan::parse::<RawTop>(text) else {
        return Ok(());
    };
    match serde_json::from_str::<RawTop>(text) {
        Ok(slow) if format!("{fast:?}") == format!("{slow:?}") => Ok(()),
        Ok(slow) => Err(format!("read as {fast:?}, serde_json read {slow:?}")),
        Err(e) => Err(format!("read what serde_json rejects ({e})")),
    }
}

/// What the envelope says its items are.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Service {
    Snapshot,
    Progress,
    /// A bare record or array: tell by the item's own fields.
    Unknown,
}

/// Decoder for the national sync record.
#[derive(Debug)]
pub struct DvcqgDecoder {
    ctx: DecoderContext,
}

impl DvcqgDecoder {
    pub fn new(ctx: DecoderContext) -> Self {
        DvcqgDecoder { ctx }
    }
}

impl Decoder for DvcqgDecoder {
    fn format(&self) -> DecoderKind {
        DecoderKind::Dvcqg
    }

    fn decode<'a>(&self, bytes: &'a [u8], out: &mut DecodeOutput<'a>) {
        let root = Loc::ROOT;
        let text = match super::utf8(bytes) {
            Ok(t) => t,
            Err(e) => return out.rejects.push(e),
        };
        // serde_json reads again what the fast reader gives up on: it is the reference,
        // and it says where a broken message breaks.
        let top = match scan::parse::<RawTop<'a>>(text) {
            Some(t) => t,
            None => match serde_json::from_str(text) {
                Ok(t) => t,
                Err(e) => return out.rejects.push(root.error(Reason::Syntax(e.to_string()))),
            },
        };
        match top {
            RawTop::Array(items) => {
                for (i, node) in items.into_iter().enumerate() {
                    self.node(node, &root.index(i), Service::Unknown, out);
                }
            }
            RawTop::Object(node) if node.data.is_missing() => {
                self.node(*node, &root, Service::Unknown, out)
            }
            RawTop::Object(mut envelope) => {
                out.warnings.add_n(Warning::UnknownField, envelope.unknown);
                let service = match std::mem::take(&mut envelope.service) {
                    Raw::Str(s) if s.trim() == "DongBoHoSoMC" => Service::Snapshot,
                    Raw::Str(s) if s.trim() == "CapNhatTienDoHoSoMC" => Service::Progress,
                    Raw::Missing | Raw::Null => Service::Unknown,
                    Raw::Str(s) => {
                        let e = root.key("service").error(Reason::UnknownService(s.into()));
                        return out.rejects.push(e);
                    }
                    other => {
                        let e = root.key("service").error(Reason::WrongType {
                            found: other.describe(),
                            expected: "a service name",
                        });
                        return out.rejects.push(e);
                    }
                };
                let data = root.key("data");
                match std::mem::take(&mut envelope.data).items() {
                    Ok(items) => {
                        for (i, node) in items.into_iter().enumerate() {
                            self.node(node, &data.index(i), service, out);
                        }
                    }
                    Err(reason) => out.rejects.push(data.error(reason)),
                }
            }
            RawTop::Other(raw) => out.rejects.push(root.error(Reason::WrongType {
                found: raw.describe(),
                expected: "a record, an array of records, or an envelope",
            })),
        }
    }
}

impl DvcqgDecoder {
    fn node<'a>(
        &self,
        mut node: RawNode<'a>,
        loc: &Loc<'_>,
        service: Service,
        out: &mut DecodeOutput<'a>,
    ) {
        if let Some(raw) = node.not_object.take() {
            return out.rejects.push(loc.error(Reason::WrongType {
                found: raw.describe(),
                expected: "an object",
            }));
        }
        out.warnings.add_n(Warning::UnknownField, node.unknown);
        if !node.qua_trinh.is_missing() {
            let parent = std::mem::take(&mut node.ma_ho_so);
            let steps_loc = loc.key("QuaTrinhXuLy");
            match std::mem::take(&mut node.qua_trinh).items() {
                Ok(steps) => {
                    for (j, mut step) in steps.into_iter().enumerate() {
                        let step_loc = steps_loc.index(j);
                        if let Some(raw) = step.not_object.take() {
                            out.rejects.push(step_loc.error(Reason::WrongType {
                                found: raw.describe(),
                                expected: "an object",
                            }));
                            continue;
                        }
                        out.warnings.add_n(Warning::UnknownField, step.unknown);
                        if step.ma_ho_so.is_missing() {
                            step.ma_ho_so = parent.clone();
                        }
                        let r = self.progress(step, &step_loc, &mut out.warnings);
                        out.push(r);
                    }
                }
                Err(reason) => out.rejects.push(steps_loc.error(reason)),
            }
            return;
        }
        let is_progress = match service {
            Service::Progress => true,
            Service::Snapshot => false,
            Service::Unknown => {
                node.trang_thai_ho_so.is_missing() && !node.thoi_diem_xu_ly.is_missing()
            }
        };
        let r = if is_progress {
            self.progress(node, loc, &mut out.warnings)
        } else {
            self.snapshot(node, loc, &mut out.warnings)
        };
        out.push(r);
    }

    fn snapshot<'a>(
        &self,
        n: RawNode<'a>,
        loc: &Loc<'_>,
        w: &mut Warnings,
    ) -> Result<DossierEvent<'a>, DecodeError> {
        let at = |k: &'static str| move |reason: Reason| loc.key(k).error(reason);
        let dossier_code = required_code(n.ma_ho_so, w).map_err(at("MaHoSo"))?;
        let status = status(&n.trang_thai_ho_so, w).map_err(at("TrangThaiHoSo"))?;
        let channel = match n.kenh_thuc_hien.int(w).map_err(at("KenhThucHien"))? {
            None => Channel::InPerson,
            Some(c) => Channel::from_code(c).ok_or_else(|| {
                at("KenhThucHien")(Reason::UnknownCode {
                    value: c.to_string(),
                    expected: "a channel code (1 in person, 2 online, 3 postal)",
                })
            })?,
        };
        let time = |raw: &Raw<'_>, k: &'static str, w: &mut Warnings| raw.time(w).map_err(at(k));
        let filed_at = time(&n.ngay_nop, "NgayNopHoSo", w)?;
        let received_at = time(&n.ngay_tiep_nhan, "NgayTiepNhan", w)?;
        let due_at = time(&n.ngay_hen_tra, "NgayHenTra", w)?;
        let finished_at = time(&n.ngay_ket_thuc, "NgayKetThucXuLy", w)?;
        let returned_at = time(&n.ngay_tra, "NgayTra", w)?;
        let refused_at = time(&n.ngay_tu_choi, "NgayTuChoi", w)?;

        let supplements = supplements(n.bo_sung, &loc.key("DanhSachHoSoBoSung"), w)?;
        let mut flags = Flags {
            has_digitized_component: n.co_so_hoa.int(w).map_err(at("HoSoCoThanhPhanSoHoa"))?
                == Some(1),
            ..Flags::default()
        };
        flags.has_reused_component = flags.has_digitized_component;
        let document_count = documents(n.tai_lieu_nop, &loc.key("TaiLieuNop"), &mut flags, w)?;
        flags.fee_bearing = fee_bearing(n.le_phi, &loc.key("DanhSachLePhi"), w)?;
        let (result_document_count, result_file_count) =
            results(n.ket_qua, &loc.key("DanhSachGiayToKetQua"), w)?;
        flags.has_e_result = result_file_count > 0;
        flags.paid_online = matches!(
            n.thanh_toan.int(w).map_err(at("DuocThanhToanTrucTuyen"))?,
            Some(1 | 2)
        );

        let applicant_type = match n.loai_doi_tuong.int(w).map_err(at("LoaiDoiTuong"))? {
            None => None,
            Some(c) => {
                let t = ApplicantType::from_code(c);
                if t.is_none() {
                    w.add(Warning::UnknownCodeNulled);
                }
                t
            }
        };
        let applicant_pseudonym = self.pseudonym(n.so_giay_to, n.dinh_danh, loc, w)?;

        let event_time = [filed_at, received_at, finished_at, returned_at, refused_at]
            .into_iter()
            .chain(
                supplements
                    .iter()
                    .flat_map(|s| [Some(s.requested_at), s.completed_at]),
            )
            .flatten()
            .max()
            .ok_or_else(|| loc.error(Reason::NoEventTime))?;
        if let (Some(due), Some(received)) = (due_at, received_at) {
            if due < received {
                w.add(Warning::DueBeforeReceipt);
            }
        }

        Ok(DossierEvent {
            event_id: self.event_id(&dossier_code, status, event_time, EventKind::Snapshot),
            kind: EventKind::Snapshot,
            source_system: self.ctx.source_system.clone(),
            procedure_code: optional_code(n.ma_tthc, w).map_err(at("MaTTHC"))?,
            procedure_name: optional_text(n.ten_tthc, w).map_err(at("TenTTHC"))?,
            field_code: optional_code(n.ma_linh_vuc, w).map_err(at("MaLinhVuc"))?,
            field_name: optional_text(n.ten_linh_vuc, w).map_err(at("TenLinhVuc"))?,
            agency_code: optional_code(n.don_vi_xu_ly, w).map_err(at("DonViXuLy"))?,
            dossier_code,
            channel: Some(channel),
            status,
            event_time,
            filed_at,
            received_at,
            due_at,
            finished_at,
            returned_at,
            refused_at,
            supplements,
            document_count,
            result_document_count,
            result_file_count,
            flags,
            applicant_type,
            applicant_pseudonym,
            step_started_at: None,
            step_due_at: None,
        })
    }

    fn progress<'a>(
        &self,
        n: RawNode<'a>,
        loc: &Loc<'_>,
        w: &mut Warnings,
    ) -> Result<DossierEvent<'a>, DecodeError> {
        let at = |k: &'static str| move |reason: Reason| loc.key(k).error(reason);
        let dossier_code = required_code(n.ma_ho_so, w).map_err(at("MaHoSo"))?;
        let status = status(&n.trang_thai, w).map_err(at("TrangThai"))?;
        let event_time = n
            .thoi_diem_xu_ly
            .time(w)
            .map_err(at("ThoiDiemXuLy"))?
            .ok_or_else(|| at("ThoiDiemXuLy")(Reason::Missing))?;
        let step_started_at = n.ngay_bat_dau.time(w).map_err(at("NgayBatDau"))?;
        let step_due_at = n
            .ngay_ket_thuc_quy_dinh
            .time(w)
            .map_err(at("NgayKetThucTheoQuyDinh"))?;
        Ok(DossierEvent {
            event_id: self.event_id(&dossier_code, status, event_time, EventKind::Progress),
            kind: EventKind::Progress,
            source_system: self.ctx.source_system.clone(),
            dossier_code,
            procedure_code: None,
            procedure_name: None,
            field_code: None,
            field_name: None,
            agency_code: None,
            channel: None,
            status,
            event_time,
            filed_at: None,
            received_at: None,
            due_at: None,
            finished_at: None,
            returned_at: None,
            refused_at: None,
            supplements: Vec::new(),
            document_count: 0,
            result_document_count: 0,
            result_file_count: 0,
            flags: Flags::default(),
            applicant_type: None,
            applicant_pseudonym: None,
            step_started_at,
            step_due_at,
        })
    }

    /// A progress step and a snapshot with the same status and time are different facts,
    /// so the kind is part of the hashed identity of progress events.
    fn event_id(
        &self,
        dossier: &str,
        status: Status,
        time: Micros,
        kind: EventKind,
    ) -> Cow<'static, str> {
        let source: &str = &self.ctx.source_system;
        let id = match kind {
            EventKind::Snapshot => normalize::event_id(source, dossier, status.code(), time),
            EventKind::Progress => {
                normalize::event_id(&format!("{source}/progress"), dossier, status.code(), time)
            }
        };
        Cow::Owned(id)
    }

    fn pseudonym(
        &self,
        id_number: Raw<'_>,
        idents: RawList<RawIdent<'_>>,
        loc: &Loc<'_>,
        w: &mut Warnings,
    ) -> Result<Option<String>, DecodeError> {
        let own = id_number
            .text(w)
            .map_err(|r| loc.key("SoGiayToChuHoSo").error(r))?;
        if let Some(p) = own.and_then(|id| self.ctx.pseudonymizer.pseudonym(&id)) {
            return Ok(Some(p));
        }
        let idents_loc = loc.key("DinhDanhCHS");
        for (i, ident) in idents
            .items()
            .map_err(|r| idents_loc.error(r))?
            .into_iter()
            .enumerate()
        {
            if ident.not_object.is_some() {
                continue;
            }
            let id = ident
                .so_dinh_danh
                .text(w)
                .map_err(|r| idents_loc.index(i).key("SoDinhDanh").error(r))?;
            if let Some(p) = id.and_then(|id| self.ctx.pseudonymizer.pseudonym(&id)) {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }
}

fn required_code<'a>(raw: Raw<'a>, w: &mut Warnings) -> Result<Cow<'a, str>, Reason> {
    let missing = raw.is_missing() || raw == Raw::Null;
    match raw.text(w)?.and_then(|s| normalize::code(s, w)) {
        Some(c) => Ok(c),
        None if missing => Err(Reason::Missing),
        None => Err(Reason::Empty),
    }
}

fn optional_code<'a>(raw: Raw<'a>, w: &mut Warnings) -> Result<Option<Cow<'a, str>>, Reason> {
    Ok(raw.text(w)?.and_then(|s| normalize::code(s, w)))
}

fn optional_text<'a>(raw: Raw<'a>, w: &mut Warnings) -> Result<Option<Cow<'a, str>>, Reason> {
    Ok(raw.text(w)?.and_then(|s| normalize::text(s, w)))
}

fn status(raw: &Raw<'_>, w: &mut Warnings) -> Result<Status, Reason> {
    let code = raw.int(w)?.ok_or(Reason::Missing)?;
    Status::from_code(code).ok_or(Reason::UnknownCode {
        value: code.to_string(),
        expected: "a status code (1 to 10)",
    })
}

fn item_shape(not_object: Option<Raw<'_>>, loc: &Loc<'_>) -> Result<(), DecodeError> {
    match not_object {
        None => Ok(()),
        Some(raw) => Err(loc.error(Reason::WrongType {
            found: raw.describe(),
            expected: "an object",
        })),
    }
}

fn supplements(
    list: RawList<RawSupplement<'_>>,
    loc: &Loc<'_>,
    w: &mut Warnings,
) -> Result<Vec<Supplement>, DecodeError> {
    let items = list.items().map_err(|r| loc.error(r))?;
    let mut out = Vec::with_capacity(items.len());
    for (i, s) in items.into_iter().enumerate() {
        let item = loc.index(i);
        item_shape(s.not_object, &item)?;
        w.add_n(Warning::UnknownField, s.unknown);
        let time = |raw: &Raw<'_>, k: &'static str, w: &mut Warnings| {
            raw.time(w).map_err(|r| item.key(k).error(r))
        };
        out.push(Supplement {
            requested_at: time(&s.requested, "NgayBoSung", w)?
                .ok_or_else(|| item.key("NgayBoSung").error(Reason::Missing))?,
            completed_at: time(&s.completed, "NgayTiepNhanBoSung", w)?,
            due_before: time(&s.due_before, "NgayHenTraTruoc", w)?,
            due_after: time(&s.due_after, "NgayHenTraMoi", w)?,
        });
    }
    Ok(out)
}

/// Counts documents that are not deleted, and sets the document flags from them.
fn documents(
    list: RawList<RawDoc<'_>>,
    loc: &Loc<'_>,
    flags: &mut Flags,
    w: &mut Warnings,
) -> Result<u32, DecodeError> {
    let mut count = 0;
    for (i, d) in list
        .items()
        .map_err(|r| loc.error(r))?
        .into_iter()
        .enumerate()
    {
        let item = loc.index(i);
        item_shape(d.not_object, &item)?;
        w.add_n(Warning::UnknownField, d.unknown);
        let flag = |raw: &Raw<'_>, k: &'static str, w: &mut Warnings| {
            raw.flag(w).map_err(|r| item.key(k).error(r))
        };
        if flag(&d.is_deleted, "IsDeleted", w)? {
            continue;
        }
        count += 1;
        let link = d
            .file_link
            .text(w)
            .map_err(|r| item.key("DuongDanTaiTepTin").error(r))?;
        flags.has_submitted_file |= link.is_some_and(|l| !l.trim().is_empty());
        let digitized = flag(&d.digitized, "DuocSoHoa", w)?;
        flags.has_digitized_component |= digitized;
        flags.has_reused_component |= flag(&d.reused, "DuocTaiSuDung", w)?;
        flags.from_national_warehouse |= flag(&d.from_warehouse, "DuocLayTuKhoDMQG", w)?;
        // The id is only checked for shape: a document without a link is not a file.
        d.file_id
            .text(w)
            .map_err(|r| item.key("TepDinhKemId").error(r))?;
    }
    Ok(count)
}

fn fee_bearing(
    list: RawList<RawFee<'_>>,
    loc: &Loc<'_>,
    w: &mut Warnings,
) -> Result<bool, DecodeError> {
    let mut bearing = false;
    for (i, f) in list
        .items()
        .map_err(|r| loc.error(r))?
        .into_iter()
        .enumerate()
    {
        let item = loc.index(i);
        item_shape(f.not_object, &item)?;
        w.add_n(Warning::UnknownField, f.unknown);
        let price = f.price.number(w).map_err(|r| item.key("Gia").error(r))?;
        bearing |= price.is_some_and(|p| p > 0.0);
    }
    Ok(bearing)
}

fn results(
    list: RawList<RawResult<'_>>,
    loc: &Loc<'_>,
    w: &mut Warnings,
) -> Result<(u32, u32), DecodeError> {
    let (mut docs, mut files) = (0, 0);
    for (i, r) in list
        .items()
        .map_err(|r| loc.error(r))?
        .into_iter()
        .enumerate()
    {
        let item = loc.index(i);
        item_shape(r.not_object, &item)?;
        w.add_n(Warning::UnknownField, r.unknown);
        docs += 1;
        let link = r
            .file_link
            .text(w)
            .map_err(|e| item.key("DuongDanTepTinKetQua").error(e))?;
        if link.is_some_and(|l| !l.trim().is_empty()) {
            files += 1;
        }
    }
    Ok((docs, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the fast reader and serde_json each read one message, after checking
    /// that they agree where both do.
    fn both(text: &str) -> (bool, bool) {
        if let Err(e) = readers_agree(text) {
            panic!("{e}: {text}");
        }
        (
            scan::parse::<RawTop>(text).is_some(),
            serde_json::from_str::<RawTop>(text).is_ok(),
        )
    }

    /// Every national sync fixture and bad-input case that is UTF-8.
    fn corpus() -> Vec<String> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests");
        let mut texts = Vec::new();
        for dir in ["fixtures/dvcqg", "bad-input/dvcqg"] {
            let mut paths: Vec<_> = std::fs::read_dir(root.join(dir))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            paths.sort();
            for path in paths {
                if let Ok(text) = String::from_utf8(std::fs::read(&path).unwrap()) {
                    texts.push(text);
                }
            }
        }
        assert!(texts.len() > 50, "only {} files", texts.len());
        texts
    }

    #[test]
    fn the_fast_reader_reads_every_case_as_serde_json_does() {
        let mut read = 0;
        for text in &corpus() {
            match both(text) {
                (true, _) => read += 1,
                // Most cases are valid JSON with bad values; the reader must take them all,
                // but for integers too long for a u64, which serde_json reads as floats.
                (false, true) => assert!(
                    text.as_bytes()
                        .split(|b| !b.is_ascii_digit())
                        .any(|run| run.len() > 19),
                    "valid JSON left to serde_json: {text}"
                ),
                (false, false) => {}
            }
        }
        assert!(read > 50, "read {read}");
    }

    /// Random edits of real messages: wherever the fast reader accepts one, serde_json
    /// must accept it too and read the same values.
    #[test]
    fn edited_messages_are_read_alike_or_left_to_serde_json() {
        const TOKENS: &[&str] = &[
            "\"",
            "\\",
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "0",
            "-",
            ".",
            "e",
            "E+",
            "7",
            " ",
            "\n",
            "\u{1}",
            "\\u",
            "\\ud83d",
            "\\ude00",
            "\\u00e9",
            "null",
            "true",
            "-0",
            "1.5e3",
            "\"x\":1,",
            "é",
            "123456789012345678901",
            "1e400",
            "0.1",
            ",]",
            ",}",
            "}{",
            "][",
            ",,",
            "\"\":",
            "::",
            "[]",
            "{}",
            "\"\\u0041\"",
        ];
        let corpus = corpus();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let (mut agreed, mut left, mut rejected) = (0, 0, 0);
        for _ in 0..40_000 {
            let mut bytes = corpus[next(corpus.len())].clone().into_bytes();
            // Mostly one edit, so that a second does not hide what the first broke.
            for _ in 0..1 + next(4) / 3 {
                // Half the edits land next to punctuation, where grammar mistakes hide.
                let marks: Vec<usize> = (0..bytes.len())
                    .filter(|&i| b"{}[],:\"".contains(&bytes[i]))
                    .collect();
                let at = match marks.len() {
                    n if n > 0 && next(2) == 0 => marks[next(n)] + next(2),
                    _ => next(bytes.len() + 1),
                };
                let token = TOKENS[next(TOKENS.len())].as_bytes();
                match next(4) {
                    0 => {
                        let end = (at + 1 + next(4)).min(bytes.len());
                        bytes.drain(at.min(end)..end);
                    }
                    1 => {
                        bytes.splice(at..at, token.iter().copied());
                    }
                    2 if at < bytes.len() => {
                        bytes.splice(at..at + 1, token.iter().copied());
                    }
                    _ => bytes.truncate(at),
                }
            }
            let Ok(text) = String::from_utf8(bytes) else {
                continue;
            };
            match both(&text) {
                (true, _) => agreed += 1,
                (false, true) => left += 1,
                (false, false) => rejected += 1,
            }
        }
        // Enough of each outcome that the comparison means something.
        assert!(
            agreed > 3_000 && rejected > 3_000,
            "{agreed} read, {rejected} broken"
        );
        // Valid edits the reader declines are slow, not wrong; they should be rare.
        assert!(
            left * 20 < agreed,
            "{left} left to serde_json, {agreed} read"
        );
    }
}
