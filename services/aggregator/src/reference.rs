//! The reference data a run judges and names by: the working-day calendar, the
//! procedure catalogue and the agency reference, from the files the configuration names
//! or the tables built into the binary.

use sohoa_runtime::config::AggregateConfig;

use crate::agencies::Agencies;
use crate::calendar::{Calendar, OfficeHours};
use crate::catalog::Catalog;
use crate::AggregateError;

/// The calendar and the catalogue the configuration names (or the embedded ones).
pub fn reference_data(cfg: &AggregateConfig) -> Result<(Calendar, Catalog), AggregateError> {
    let hours = OfficeHours::parse(&cfg.office_hours).map_err(AggregateError::OfficeHours)?;
    let read = |key, path: &str| {
        std::fs::read_to_string(path).map_err(|cause| AggregateError::ReadFile {
            key,
            path: path.to_string(),
            cause,
        })
    };
    let cal = if cfg.calendar.is_empty() {
        Calendar::embedded(hours)
    } else {
        Calendar::from_toml(&read("aggregate.calendar", &cfg.calendar)?, hours)
    }
    .map_err(|cause| AggregateError::Calendar {
        path: cfg.calendar.clone(),
        cause,
    })?;
    let catalog = if cfg.catalogue.is_empty() {
        Catalog::embedded()
    } else {
        Catalog::from_toml(&read("aggregate.catalogue", &cfg.catalogue)?)
    }
    .map_err(|cause| AggregateError::Catalogue {
        path: cfg.catalogue.clone(),
        cause,
    })?;
    Ok((cal, catalog))
}

/// The agency reference the configuration names (or the embedded one), with the
/// configured province.
pub fn agency_reference(cfg: &AggregateConfig) -> Result<Agencies, AggregateError> {
    let bad = |cause| AggregateError::Agencies {
        path: cfg.agencies.clone(),
        cause: Box::new(cause),
    };
    let agencies = if cfg.agencies.is_empty() {
        Agencies::embedded()
    } else {
        let data = std::fs::read(&cfg.agencies).map_err(|cause| AggregateError::ReadFile {
            key: "aggregate.agencies",
            path: cfg.agencies.clone(),
            cause,
        })?;
        Agencies::from_file(&cfg.agencies, data)
    };
    agencies
        .map_err(bad)?
        .with_province(&cfg.province)
        .map_err(|e| AggregateError::Province(Box::new(e)))
}

/// The name of the report's province: the configured one, or the reference's only
/// current province; empty when the reference has neither.
pub fn province_name(agencies: &Agencies) -> String {
    agencies
        .default_province()
        .map(|p| agencies.name(p).to_string())
        .unwrap_or_default()
}
