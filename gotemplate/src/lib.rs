//! A Go `text/template` implementation, with CAREN's one extra function, `joinQuoted`.
//!
//! CAREN renders values templates with Go's `text/template` (CAREN builds with Go 1.25; the reference here is Go
//! 1.26: `{{else with}}`, `range` over an integer, `break`/`continue`, variable reassignment, short-circuit
//! `and`/`or`), and operators may replace the template with any text that works there. gtmpl, the Rust port
//! konnector used before, differs from Go in ways a differential test exposed: it lacks `joinQuoted`, `slice`,
//! `html`, `js`, `break`, `continue` and reassignment, mis-lexes `\"` in strings, hex constants and raw strings, and
//! its `printf` ignores `%q`, `%-6d` and `%06d`, so `printf "%q"` (the obvious way to quote a scalar) silently
//! rendered it bare. This crate is written against Go's semantics instead, and `tests/template_differential.rs`
//! compares it with Go's own `text/template` (the program in `tests/go/render`): the same bytes, or both fail.
//!
//! Scope: the data is a flat struct of strings, unsigned integers and booleans ([`Value::Struct`]), so there are
//! no maps, slices, methods, function values or iterators (`range` over a function and `call` of one are
//! unreachable: every `call` fails, and only integers and nil can be ranged over). Anything outside what is
//! implemented (an unknown `printf` verb, complex numbers) is an error, never a guess: a template this engine
//! cannot render exactly like Go is refused.
//!
//! The crate knows nothing of what the data means: the caller builds the [`Value`] (konnector's executor does it
//! in `values.rs`) and maps [`Error`] onto its own errors. It depends on the standard library only.

mod exec;
mod fmt;
mod lex;
mod parse;

/// A value as a template sees it, with the Go type that decides how it prints and compares.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// An untyped nil.
    Nil,
    /// `bool`.
    Bool(bool),
    /// `int` (constants, `len`).
    Int(i64),
    /// An unsigned integer of the named Go type (e.g. `uint16` for a port, `uint8` from indexing a string).
    Uint(u64, &'static str),
    /// `float64` (constants).
    Float(f64),
    /// `string`.
    Str(String),
    /// A struct: its fields in declaration order, and its Go type name (what `%T` prints and errors name, e.g.
    /// `main.values`).
    Struct(Vec<(String, Value)>, &'static str),
}

impl Value {
    fn type_name(&self) -> &'static str {
        match self {
            Self::Nil => "<nil>",
            Self::Bool(_) => "bool",
            Self::Int(_) => "int",
            Self::Uint(_, t) | Self::Struct(_, t) => t,
            Self::Float(_) => "float64",
            Self::Str(_) => "string",
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
            Self::Struct(..) => true,
        }
    }
}

/// Why a template could not be rendered. The texts follow Go's where they can, and may quote the data a function
/// choked on: a caller that must not echo its inputs scrubs them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The template does not parse (Go's `Parse` fails).
    Parse(String),
    /// The template parsed but could not be executed (Go's `Execute` fails), e.g. it names an unknown field.
    Execute(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Parse(m) => write!(f, "parse: {m}"),
            Self::Execute(m) => write!(f, "execute: {m}"),
        }
    }
}

impl std::error::Error for Error {}

/// The engine's internal result: a message that [`render`] files under [`Error::Parse`] or [`Error::Execute`].
type Res<T> = Result<T, String>;

/// Parses and executes `template` with `data` as dot, as Go's `text/template` would with CAREN's `joinQuoted`.
pub fn render(template: &str, data: Value) -> Result<String, Error> {
    let parsed = parse::parse(template).map_err(Error::Parse)?;
    let mut exec = exec::Exec {
        defines: &parsed.defines,
        vars: vec![("$".to_owned(), data.clone())],
        out: String::new(),
        depth: 0,
        iterations: 0,
    };
    exec.list(&parsed.main, &data).map_err(Error::Execute)?;
    Ok(exec.out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> Value {
        Value::Struct(
            vec![
                ("Name".into(), Value::Str("my-cluster".into())),
                ("Port".into(), Value::Uint(9440, "uint16")),
                ("On".into(), Value::Bool(true)),
                ("Empty".into(), Value::Str(String::new())),
            ],
            "main.values",
        )
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
            "Go cannot range over a string"
        );
        assert!(fails("{{ if .On }}{{ define \"T\" }}{{ end }}{{ end }}"));
        assert_eq!(
            r("{{ if false }}{{ range .Name }}{{ break }}{{ continue }}{{ end }}{{ end }}ok"),
            "ok"
        );
    }

    #[test]
    fn go_1_22_to_1_26_features() {
        // {{else with}} (Go 1.23), only in a with.
        assert_eq!(
            r("{{ with .Empty }}a{{ else with .Name }}{{ . }}{{ else }}c{{ end }}"),
            "my-cluster"
        );
        assert_eq!(
            r("{{ with .Empty }}a{{ else with .Empty }}b{{ else }}c{{ end }}"),
            "c"
        );
        assert!(fails("{{ if .On }}a{{ else with .Name }}b{{ end }}"));
        assert!(fails("{{ range 1 }}a{{ else if .Name }}b{{ end }}"));
        // range over an integer (Go 1.22), in the integer's own type; one variable at most.
        assert_eq!(
            r("{{ range 3 }}{{ . }}{{ end }}|{{ range -1 }}x{{ else }}none{{ end }}"),
            "012|none"
        );
        assert_eq!(
            r("{{ range $p := .Port }}{{ printf \"%T\" $p }}{{ break }}{{ end }}"),
            "uint16"
        );
        assert!(fails("{{ range $i, $e := 3 }}{{ end }}"));
        assert!(fails("{{ range 1.5 }}{{ end }}"));
        assert!(fails("{{ range .On }}{{ end }}"));
        // The range pipeline's variable holds the ranged value in {{else}}, and assignment leaves the last element.
        assert_eq!(r("{{ range $x := 0 }}x{{ else }}{{ $x }}{{ end }}"), "0");
        assert_eq!(r("{{ $x := 9 }}{{ range $x = 3 }}{{ end }}{{ $x }}"), "2");
        // break and continue, through nested control structures.
        assert_eq!(
            r(
                "{{ range $i := 9 }}{{ if eq $i 1 }}{{ continue }}{{ end }}{{ with $i }}{{ if gt . 3 }}{{ break }}{{ end }}{{ end }}{{ $i }}{{ end }}"
            ),
            "023"
        );
        // A break in a range's {{else}} ends that range statement only; a continue there reaches the outer loop.
        assert_eq!(
            r(
                "{{ range $i := 3 }}{{ range 0 }}{{ else }}{{ if eq $i 1 }}{{ break }}{{ end }}{{ end }}{{ $i }}{{ end }}"
            ),
            "012"
        );
        assert_eq!(
            r(
                "{{ range $i := 3 }}{{ range 0 }}{{ else }}{{ if eq $i 1 }}{{ continue }}{{ end }}{{ end }}{{ $i }}{{ end }}"
            ),
            "02"
        );
        // Assignment to a variable checks that it exists when it runs, not when parsed.
        assert_eq!(r("{{ if false }}{{ $x = 1 }}{{ end }}ok"), "ok");
        assert!(fails("{{ $x = 1 }}"));
        // Runaway loops are stopped.
        assert!(fails("{{ range 2000000 }}{{ end }}"));
        assert_eq!(r("{{ range 1000 }}{{ range 999 }}{{ end }}{{ end }}ok"), "ok");
    }

    #[test]
    fn nil_and_comparisons_as_go() {
        // nil is a value builtins take: falsy, equal only to nil.
        assert_eq!(
            r("{{ eq nil nil }} {{ eq 1 nil }} {{ eq . nil }} {{ not nil }}"),
            "true false false true"
        );
        assert_eq!(r("{{ and nil 1 }}|{{ or nil 0 }}"), "<no value>|0");
        assert!(fails("{{ lt nil 1 }}"));
        assert!(fails("{{ len nil }}"));
        assert!(fails("{{ printf nil }}"));
        // eq stops at the first match, so a later operand of another kind is no error.
        assert_eq!(r("{{ eq 1 1 \"x\" }}"), "true");
        assert!(fails("{{ eq 1 \"x\" 1 }}"));
        assert_eq!(r("{{ eq . . }} {{ ne . $ }}"), "true false");
        assert!(fails("{{ lt . . }}"));
        assert!(fails("{{ eq . 1 }}"));
        assert_eq!(
            r("{{ lt -1 .Port }} {{ gt .Port -1 }} {{ le .Port 9440 }} {{ ge 1 .Port }}"),
            "true true true false"
        );
        // Argument counts are checked before arguments are evaluated.
        assert!(fails("{{ and }}"));
        assert!(fails("{{ not 1 2 }}"));
        assert!(fails("{{ lt 1 }}"));
        assert_eq!(r("{{ and 0 .Missing }}|{{ or 1 .Missing }}"), "0|1");
        assert!(fails("{{ and 1 .Missing }}"));
    }

    #[test]
    fn printf_of_the_struct_and_of_bad_verbs_as_go() {
        // A struct is formatted field by field with the verb and width; %+v names the fields.
        assert_eq!(
            r("{{ printf \"%d\" . }}"),
            "{%!d(string=my-cluster) 9440 %!d(bool=true) %!d(string=)}"
        );
        assert_eq!(
            r("{{ printf \"%+v\" . }}"),
            "{Name:my-cluster Port:9440 On:true Empty:}"
        );
        assert!(fails("{{ printf \"%#v\" . }}"));
        // A bad verb shows its operand with the directive's width.
        assert_eq!(r("{{ printf \"%4d\" \"a\" }}"), "%!d(string=   a)");
        // %q escapes what Go does not print, and refuses code points it cannot classify.
        assert_eq!(r("{{ printf \"%q %q\" 65535 8364 }}"), "'\\uffff' '€'");
        assert!(fails("{{ printf \"%q\" 888 }}"));
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
