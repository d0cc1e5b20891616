//! Go `text/template` evaluation, as CAREN does it: gtmpl plus the functions gtmpl lacks.
//!
//! CAREN renders values templates with Go's `text/template` and one extra function, `joinQuoted`. gtmpl is a
//! port of `text/template` that lacks `joinQuoted`, `slice`, `html` and `js`; a template naming any of them fails
//! at parse time, even in a branch never taken. They are added here. What gtmpl still lacks is parser syntax
//! (`break`/`continue` in `range`, reassigning a variable with `$x = ...`): templates using it fail to parse, so
//! such a template is refused clearly rather than rendered differently. `tests/tests/template_differential.rs`
//! compares this module with Go's own `text/template` byte for byte and asserts that list of gaps.
//!
//! Why gtmpl and not a new engine: the differential test shows gtmpl already matches Go on everything else the
//! values templates can reach (their data is a flat struct of strings, one integer and booleans), and the
//! remaining gaps fail closed. Replacing the engine would trade two known, refused constructs for a large body
//! of new code on the path of every values rendering.

use gtmpl::{Func, FuncError, Value};

use crate::values::RenderError;

/// Functions added to gtmpl's builtins.
const EXTRA_FUNCS: [(&str, Func); 4] = [
    ("joinQuoted", join_quoted as Func),
    ("slice", slice as Func),
    ("html", html as Func),
    ("js", js as Func),
];

/// Parses and executes `template` with `data` as dot.
pub(crate) fn render(template: &str, data: Value) -> Result<String, RenderError> {
    let mut tmpl = gtmpl::Template::default();
    tmpl.add_funcs(&EXTRA_FUNCS);
    tmpl.parse(template)
        .map_err(|e| RenderError::Parse(e.to_string()))?;
    tmpl.render(&gtmpl::Context::from(data))
        .map_err(|e| RenderError::Execute(e.to_string()))
}

/// CAREN's `joinQuoted(items []string) string`: each item quoted as Go's `%q` does, joined by `", "`. `nil` is
/// an empty list, as in Go.
fn join_quoted(args: &[Value]) -> Result<Value, FuncError> {
    let [items] = args else {
        return Err(FuncError::ExactlyXArgs("joinQuoted".into(), 1));
    };
    let items: &[Value] = match items {
        Value::Array(a) => a,
        Value::Nil => &[],
        _ => {
            return Err(FuncError::Generic(
                "joinQuoted: wrong type for value; expected []string".into(),
            ));
        }
    };
    let quoted: Result<Vec<String>, FuncError> = items
        .iter()
        .map(|v| match v {
            Value::String(s) => Ok(go_quote(s)),
            _ => Err(FuncError::Generic(
                "joinQuoted: wrong type for value; expected []string".into(),
            )),
        })
        .collect();
    Ok(Value::from(quoted?.join(", ")))
}

/// Go's `strconv.Quote`: a double-quoted string with Go escapes; printable characters stay as they are.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `slice item i [j]`: `item[i:j]` on a string (by bytes) or a list. A cut inside a UTF-8 character is
/// refused (Go would produce invalid UTF-8).
fn slice(args: &[Value]) -> Result<Value, FuncError> {
    let Some((item, indexes)) = args.split_first() else {
        return Err(FuncError::AtLeastXArgs("slice".into(), 1));
    };
    let index = |v: &Value| match v {
        Value::Number(n) => n
            .as_i64()
            .and_then(|i| usize::try_from(i).ok())
            .ok_or_else(|| FuncError::Generic(format!("slice: index out of range: {n}"))),
        _ => Err(FuncError::Generic("slice: cannot index slice/array with a non-integer".into())),
    };
    let bounds = |len: usize, max_indexes: usize| -> Result<(usize, usize), FuncError> {
        if indexes.len() > max_indexes {
            return Err(FuncError::Generic(format!(
                "slice: too many slice indexes: {}",
                indexes.len()
            )));
        }
        let idx: Vec<usize> = indexes.iter().map(index).collect::<Result<_, _>>()?;
        let (from, to) = (idx.first().copied().unwrap_or(0), idx.get(1).copied().unwrap_or(len));
        if let Some(&cap) = idx.get(2)
            && (to > cap || cap > len)
        {
            return Err(FuncError::Generic(format!("slice: index out of range: {cap}")));
        }
        if to > len {
            return Err(FuncError::Generic(format!("slice: index out of range: {to}")));
        }
        if from > to {
            return Err(FuncError::Generic(format!("slice: invalid slice index: {from} > {to}")));
        }
        Ok((from, to))
    };
    match item {
        Value::String(s) => {
            if indexes.len() == 3 {
                return Err(FuncError::Generic("slice: cannot 3-index slice a string".into()));
            }
            let (from, to) = bounds(s.len(), 2)?;
            s.get(from..to).map(Value::from).ok_or_else(|| {
                FuncError::Generic("slice: the cut falls inside a UTF-8 character".into())
            })
        }
        Value::Array(a) => {
            let (from, to) = bounds(a.len(), 3)?;
            Ok(Value::Array(a[from..to].to_vec()))
        }
        Value::Nil | Value::NoValue => Err(FuncError::Generic("slice: slice of untyped nil".into())),
        _ => Err(FuncError::Generic("slice: can't slice item of this type".into())),
    }
}

/// The text of a function's arguments as Go's escapers take it: a lone string as is, else `fmt.Sprint`.
fn escaper_text(args: &[Value]) -> String {
    if let [Value::String(s)] = args {
        return s.clone();
    }
    // fmt.Sprint: a space between operands when neither is a string.
    let mut out = String::new();
    for (i, v) in args.iter().enumerate() {
        if i > 0 && !matches!(v, Value::String(_)) && !matches!(args[i - 1], Value::String(_)) {
            out.push(' ');
        }
        out.push_str(&v.to_string());
    }
    out
}

/// Go's `html`: `template.HTMLEscapeString` of the arguments' text.
fn html(args: &[Value]) -> Result<Value, FuncError> {
    let mut out = String::new();
    for c in escaper_text(args).chars() {
        match c {
            '\0' => out.push('\u{FFFD}'),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    Ok(Value::from(out))
}

/// Go's `js`: `template.JSEscapeString` of the arguments' text.
fn js(args: &[Value]) -> Result<Value, FuncError> {
    let mut out = String::new();
    for c in escaper_text(args).chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' => out.push_str("\\u003C"),
            '>' => out.push_str("\\u003E"),
            '&' => out.push_str("\\u0026"),
            '=' => out.push_str("\\u003D"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04X}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    Ok(Value::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(t: &str) -> String {
        render(t, Value::Nil).unwrap()
    }

    #[test]
    fn extra_functions() {
        // gtmpl refuses `nil` as any function's argument, so joinQuoted can only fail at run time here; in Go,
        // with CAREN's variables (no lists), it can only succeed on nil. A known gap of the differential test.
        assert!(render(r#"{{ joinQuoted nil }}"#, Value::Nil).is_err());
        assert!(render(r#"{{ joinQuoted "x" }}"#, Value::Nil).is_err());
        assert_eq!(go_quote("a\"b\\c\nd\u{1}é"), r#""a\"b\\c\nd\x01é""#);
        assert_eq!(r(r#"{{ slice "abcdef" 1 3 }}"#), "bc");
        assert_eq!(r(r#"{{ slice "abcdef" 2 }}"#), "cdef");
        assert_eq!(r(r#"{{ slice "abcdef" }}"#), "abcdef");
        assert!(render(r#"{{ slice "abc" 2 1 }}"#, Value::Nil).is_err());
        assert!(render(r#"{{ slice "abc" 0 4 }}"#, Value::Nil).is_err());
        assert!(render(r#"{{ slice "abc" 0 1 2 }}"#, Value::Nil).is_err());
        assert!(render(r#"{{ slice "é" 0 1 }}"#, Value::Nil).is_err());
        assert_eq!(r(r#"{{ html "<a href='x'>&" }}"#), "&lt;a href=&#39;x&#39;&gt;&amp;");
        assert_eq!(r(r#"{{ js "a'b<=>&" }}"#), r#"a\'b\u003C\u003D\u003E\u0026"#);
        // An unused branch naming joinQuoted parses, as in Go.
        assert_eq!(r(r#"{{ if false }}{{ joinQuoted nil }}{{ end }}ok"#), "ok");
    }
}
