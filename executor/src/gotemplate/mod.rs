//! A Go `text/template` implementation for values templates, with CAREN's one extra function, `joinQuoted`.
//!
//! CAREN renders values templates with Go's `text/template` (Go 1.19+ semantics: `break`/`continue`, variable
//! reassignment, short-circuit `and`/`or`), and operators may replace the template with any text that works
//! there. gtmpl, the Rust port konnector used before, differs from Go in ways a differential test exposed: it
//! lacks `joinQuoted`, `slice`, `html`, `js`, `break`, `continue` and reassignment, mis-lexes `\"` in strings,
//! hex constants and raw strings, and its `printf` ignores `%q`, `%-6d` and `%06d`, so `printf "%q"` (the
//! obvious way to quote a scalar) silently rendered it bare. This module is written against Go's documented
//! semantics instead, and `tests/tests/template_differential.rs` compares it byte for byte with Go's own
//! `text/template`.
//!
//! Scope: the data is always a flat struct of strings, one `uint16` and booleans, so there are no maps, methods
//! or user functions. Anything outside what is implemented (an unknown `printf` verb, complex numbers) is an
//! error, never a guess: a template konnector cannot render exactly like Go is refused.

use crate::values::RenderError;

mod exec;
mod fmt;
mod lex;
mod parse;

/// A value as a template sees it, with the Go type that decides how it prints and compares.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    /// An untyped nil.
    Nil,
    /// `bool`.
    Bool(bool),
    /// `int` (constants, `len`).
    Int(i64),
    /// An unsigned integer of the named Go type (`uint16` for the port, `uint8` from indexing a string).
    Uint(u64, &'static str),
    /// `float64` (constants).
    Float(f64),
    /// `string`.
    Str(String),
    /// The data struct: its fields in declaration order.
    Struct(Vec<(String, Value)>),
}

impl Value {
    fn type_name(&self) -> &'static str {
        match self {
            Self::Nil => "<nil>",
            Self::Bool(_) => "bool",
            Self::Int(_) => "int",
            Self::Uint(_, t) => t,
            Self::Float(_) => "float64",
            Self::Str(_) => "string",
            Self::Struct(_) => "main.values",
        }
    }

    /// Go's truth: false, 0, "", nil and empty slices are false; a struct is true.
    fn truth(&self) -> bool {
        match self {
            Self::Nil => false,
            Self::Bool(b) => *b,
            Self::Int(i) => *i != 0,
            Self::Uint(u, _) => *u != 0,
            Self::Float(f) => *f != 0.0,
            Self::Str(s) => !s.is_empty(),
            Self::Struct(_) => true,
        }
    }
}

pub(super) type Res<T> = Result<T, String>;

/// Parses and executes `template` with `data` as dot, as Go's `text/template` would with CAREN's `joinQuoted`.
pub(crate) fn render(template: &str, data: Value) -> Result<String, RenderError> {
    let parsed = parse::parse(template).map_err(RenderError::Parse)?;
    let mut exec = exec::Exec {
        defines: &parsed.defines,
        vars: vec![("$".to_owned(), data.clone())],
        out: String::new(),
        depth: 0,
    };
    exec.list(&parsed.main, &data).map_err(RenderError::Execute)?;
    Ok(exec.out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> Value {
        Value::Struct(vec![
            ("Name".into(), Value::Str("my-cluster".into())),
            ("Port".into(), Value::Uint(9440, "uint16")),
            ("On".into(), Value::Bool(true)),
            ("Empty".into(), Value::Str(String::new())),
        ])
    }

    fn r(t: &str) -> String {
        render(t, data()).unwrap_or_else(|e| panic!("{t}: {e}"))
    }

    fn fails(t: &str) -> bool {
        render(t, data()).is_err()
    }

    #[test]
    fn text_actions_and_trimming() {
        assert_eq!(r("a {{ .Name }} b"), "a my-cluster b");
        assert_eq!(r("a  \n {{- .Name -}} \n b"), "amy-clusterb");
        assert_eq!(r("{{/* c */}}x{{- /* c */ -}} y"), "xy");
        assert_eq!(
            r("{{ .Port }} {{ .On }} {{ 0x1F }} {{ 1e3 }} {{ 1.5 }} {{ 'a' }} {{ -7 }}"),
            "9440 true 31 1000 1.5 97 -7"
        );
        assert_eq!(r(r#"{{ "a\"b\n" }}{{ `raw\n` }}"#), "a\"b\nraw\\n");
        assert!(fails("{{ if }}"));
        assert!(fails("{{ .Name "));
        assert!(fails("{{ nosuch }}"));
        assert!(fails("{{ $x }}"));
        assert!(fails("{{ nil }}"));
        assert!(fails("{{ break }}"));
        assert!(fails("{{ .Missing }}"));
        assert!(fails("{{ .Name.X }}"));
    }

    #[test]
    fn control_structures_and_variables() {
        assert_eq!(r("{{ if .Empty }}a{{ else if .On }}b{{ else }}c{{ end }}"), "b");
        assert_eq!(
            r("{{ with .Name }}{{ . }}/{{ $.Port }}{{ else }}none{{ end }}"),
            "my-cluster/9440"
        );
        assert_eq!(r("{{ with .Empty }}x{{ else }}none{{ end }}"), "none");
        assert_eq!(
            r("{{ $x := .Name }}{{ if .On }}{{ $x = \"y\" }}{{ end }}{{ $x }}"),
            "y"
        );
        assert_eq!(
            r("{{ define \"T\" }}[{{ . }}]{{ end }}{{ template \"T\" .Port }}"),
            "[9440]"
        );
        assert_eq!(r("{{ block \"B\" .Name }}<{{ . }}>{{ end }}"), "<my-cluster>");
        assert!(
            fails("{{ range .Name }}x{{ end }}"),
            "Go 1.19 cannot range over a string"
        );
        assert!(fails("{{ if .On }}{{ define \"T\" }}{{ end }}{{ end }}"));
        assert_eq!(
            r("{{ if false }}{{ range .Name }}{{ break }}{{ continue }}{{ end }}{{ end }}ok"),
            "ok"
        );
    }

    #[test]
    fn functions() {
        assert_eq!(
            r("{{ and .On .Name }} {{ or .Empty \"d\" }} {{ not .On }}"),
            "my-cluster d false"
        );
        assert_eq!(
            r("{{ eq .Port 9440 }} {{ lt .Name \"z\" }} {{ eq .Name \"a\" \"my-cluster\" }}"),
            "true true true"
        );
        assert!(fails("{{ eq .Name 1 }}"));
        assert_eq!(
            r("{{ len .Name }} {{ index .Name 0 }} {{ slice .Name 0 2 }}"),
            "10 109 my"
        );
        assert_eq!(
            r("{{ joinQuoted nil }}|{{ print 1 2 \"a\" 3 }}|{{ println \"a\" 1 }}"),
            "|1 2a3|a 1\n"
        );
        assert_eq!(
            r(r#"{{ printf "%q %5d|%-5d|%05d %x %s %v %t" .Name .Port .Port .Port .Port .Name .On .On }}"#),
            "\"my-cluster\"  9440|9440 |09440 24e0 my-cluster true true"
        );
        assert_eq!(
            r(r#"{{ printf "%d %s" .Name }}"#),
            "%!d(string=my-cluster) %!s(MISSING)"
        );
        assert_eq!(
            r(r#"{{ html "<a href='x'>&\"" }}|{{ js "a'b<=>&\\" }}|{{ urlquery "a b&c/é" }}"#),
            "&lt;a href=&#39;x&#39;&gt;&amp;&#34;|a\\'b\\u003C\\u003D\\u003E\\u0026\\\\|a+b%26c%2F%C3%A9"
        );
        assert!(fails("{{ joinQuoted .Name }}"));
        assert!(fails("{{ call .Name }}"));
        assert_eq!(r("{{ if false }}{{ joinQuoted .Nothing }}{{ end }}ok"), "ok");
    }
}
