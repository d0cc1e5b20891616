//! Two-column text: labels on the left, aligned; values on the right. Enough for a status at 3 a.m., without a
//! table crate.

/// Rows of `label  value`.
#[derive(Debug, Default)]
pub struct Rows(Vec<(String, String)>);

impl Rows {
    /// Adds a row; an empty label continues the row above.
    pub fn row(&mut self, label: &str, value: impl Into<String>) {
        self.0.push((label.to_owned(), value.into()));
    }

    /// The rows, labels padded to the widest, two spaces apart, one line each.
    pub fn render(&self) -> String {
        let width = self.0.iter().map(|(l, _)| l.chars().count()).max().unwrap_or(0);
        let mut out = String::new();
        for (label, value) in &self.0 {
            let line = format!("{label:<width$}  {value}");
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `yes` or `no`.
pub fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_labels() {
        let mut rows = Rows::default();
        rows.row("a", "1");
        rows.row("longer", "2");
        rows.row("", "3");
        assert_eq!(rows.render(), "a       1\nlonger  2\n        3\n");
    }
}
