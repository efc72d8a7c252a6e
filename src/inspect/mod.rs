//! Reports for people and monitors about a standby and its archive: `status`.

pub mod status;
