//! Prometheus textfile-collector output: gauges sharing one label set, as `status` and
//! `wal-verify --prometheus` write them.

use std::fmt::{Display, Write as _};

/// Gauges with one label set, written as they are added.
pub struct Gauges {
    label: String,
    out: String,
}

impl Gauges {
    /// Gauges labelled `key="value"` (the value escaped as the text format wants).
    pub fn new(key: &str, value: &str) -> Gauges {
        Gauges::with_label(format!("{key}=\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\"")))
    }

    /// Gauges with `label` as it is (`key="value"`, already escaped).
    pub fn with_label(label: impl Into<String>) -> Gauges {
        Gauges {
            label: label.into(),
            out: String::new(),
        }
    }

    /// Adds the gauge `walfetch_<name>`.
    pub fn gauge(&mut self, name: &str, help: &str, value: impl Display) {
        let label = &self.label;
        let _ = writeln!(
            self.out,
            "# HELP walfetch_{name} {help}\n# TYPE walfetch_{name} gauge\nwalfetch_{name}{{{label}}} {value}"
        );
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}
