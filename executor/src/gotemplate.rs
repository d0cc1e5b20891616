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

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::values::RenderError;

/// Deepest nesting of `{{template}}` calls, as a guard against recursion.
const MAX_DEPTH: usize = 1000;

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

type Res<T> = Result<T, String>;

// ---------------------------------------------------------------------------------------------------------------
// Lexer

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Text(String),
    Open,
    Close,
    Space,
    Pipe,
    LParen,
    RParen,
    Comma,
    Declare,
    Assign,
    Dot,
    /// `.A` (one segment; chains are consecutive Field tokens).
    Field(String),
    /// `$` or `$x`.
    Var(String),
    Ident(String),
    Str(String),
    Char(i64),
    Number(String),
    Bool(bool),
    Nil,
    Comment,
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_alnum(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

fn lex(src: &str) -> Res<Vec<Tok>> {
    let mut toks = Vec::new();
    let mut rest = src;
    let mut trim_next_text = false;
    loop {
        let (text, after) = match rest.find("{{") {
            Some(i) => (&rest[..i], Some(&rest[i + 2..])),
            None => (rest, None),
        };
        let mut text = if trim_next_text {
            text.trim_start_matches(is_space)
        } else {
            text
        };
        let Some(after) = after else {
            if !text.is_empty() {
                toks.push(Tok::Text(text.to_owned()));
            }
            return Ok(toks);
        };
        // "{{- " trims the text before it.
        // "{{- " trims the text before it; the marker is the dash and one space.
        let mut inner = after;
        if after.starts_with('-') && after[1..].starts_with(is_space) {
            text = text.trim_end_matches(is_space);
            inner = &after[2..];
        }
        if !text.is_empty() {
            toks.push(Tok::Text(text.to_owned()));
        }
        toks.push(Tok::Open);
        let (consumed, trim) = lex_action(inner, &mut toks)?;
        trim_next_text = trim;
        rest = &inner[consumed..];
    }
}

/// Whether `s` starts with the right delimiter, optionally preceded by the trim marker " -". Returns the length
/// of the delimiter including the marker, and whether it trims.
fn right_delim(s: &str) -> Option<(usize, bool)> {
    if s.starts_with("}}") {
        return Some((2, false));
    }
    let mut chars = s.char_indices();
    if let Some((_, c)) = chars.next()
        && is_space(c)
        && s[1..].starts_with("-}}")
    {
        return Some((4, true));
    }
    None
}

/// Lexes one action up to and including its right delimiter. Returns the bytes consumed and whether the
/// delimiter trims the following text.
fn lex_action(s: &str, toks: &mut Vec<Tok>) -> Res<(usize, bool)> {
    let mut i = 0;
    // A comment fills the whole action and must open right after the delimiter (and trim marker).
    if let Some(body) = s.strip_prefix("/*") {
        let end = body.find("*/").ok_or("unclosed comment")?;
        let after = 2 + end + 2;
        let (len, trim) = right_delim(&s[after..]).ok_or("comment ends before closing delimiter")?;
        toks.push(Tok::Comment);
        toks.push(Tok::Close);
        return Ok((after + len, trim));
    }
    let bytes = s.as_bytes();
    loop {
        if let Some((len, trim)) = right_delim(&s[i..]) {
            // " -}}": the space belongs to the delimiter.
            toks.push(Tok::Close);
            return Ok((i + len, trim));
        }
        let Some(c) = s[i..].chars().next() else {
            return Err("unclosed action".into());
        };
        match c {
            c if is_space(c) => {
                let n = s[i..].len() - s[i..].trim_start_matches(is_space).len();
                // Leave the last space of a run before "-}}": it belongs to the trim marker.
                if s[i + n..].starts_with("-}}") {
                    if n > 1 {
                        toks.push(Tok::Space);
                    }
                    i += n - 1;
                } else {
                    toks.push(Tok::Space);
                    i += n;
                }
            }
            '|' => {
                toks.push(Tok::Pipe);
                i += 1;
            }
            '(' => {
                toks.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                toks.push(Tok::RParen);
                i += 1;
            }
            ',' => {
                toks.push(Tok::Comma);
                i += 1;
            }
            ':' => {
                if bytes.get(i + 1) != Some(&b'=') {
                    return Err("expected :=".into());
                }
                toks.push(Tok::Declare);
                i += 2;
            }
            '=' => {
                toks.push(Tok::Assign);
                i += 1;
            }
            '"' => {
                let (value, len) = lex_quoted(&s[i..])?;
                toks.push(Tok::Str(value));
                i += len;
            }
            '`' => {
                let end = s[i + 1..].find('`').ok_or("unterminated raw quoted string")?;
                toks.push(Tok::Str(s[i + 1..i + 1 + end].replace('\r', "")));
                i += end + 2;
            }
            '\'' => {
                let (value, len) = lex_char(&s[i..])?;
                toks.push(Tok::Char(value));
                i += len;
            }
            '.' if !s[i + 1..].starts_with(|c: char| c.is_ascii_digit()) => {
                let n = s[i + 1..].find(|c: char| !is_alnum(c)).unwrap_or(s.len() - i - 1);
                if n == 0 {
                    toks.push(Tok::Dot);
                } else {
                    toks.push(Tok::Field(s[i + 1..i + 1 + n].to_owned()));
                }
                i += 1 + n;
            }
            '$' => {
                let n = s[i + 1..].find(|c: char| !is_alnum(c)).unwrap_or(s.len() - i - 1);
                toks.push(Tok::Var(format!("${}", &s[i + 1..i + 1 + n])));
                i += 1 + n;
            }
            c if c == '+' || c == '-' || c == '.' || c.is_ascii_digit() => {
                let n = s[i..]
                    .char_indices()
                    .skip(1)
                    .find(|&(j, c)| {
                        let prev = s.as_bytes()[i + j - 1];
                        !(is_alnum(c)
                            || c == '.'
                            || ((c == '+' || c == '-') && matches!(prev, b'e' | b'E' | b'p' | b'P')))
                    })
                    .map_or(s.len() - i, |(j, _)| j);
                toks.push(Tok::Number(s[i..i + n].to_owned()));
                i += n;
            }
            c if is_alnum(c) => {
                let n = s[i..].find(|c: char| !is_alnum(c)).unwrap_or(s.len() - i);
                let word = &s[i..i + n];
                toks.push(match word {
                    "true" => Tok::Bool(true),
                    "false" => Tok::Bool(false),
                    "nil" => Tok::Nil,
                    w => Tok::Ident(w.to_owned()),
                });
                i += n;
            }
            c => return Err(format!("unrecognized character in action: {c:?}")),
        }
    }
}

/// An interpreted string literal: Go's escapes. Returns the value and the literal's length.
fn lex_quoted(s: &str) -> Res<(String, usize)> {
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, i + 1)),
            '\n' => break,
            '\\' => {
                let (ch, len) = unescape(&s[i..], '"')?;
                out.push(ch);
                for _ in 1..len {
                    chars.next();
                }
            }
            c => out.push(c),
        }
    }
    Err("unterminated quoted string".into())
}

/// A character constant such as `'a'` or `'\n'`: its code point and the literal's length.
fn lex_char(s: &str) -> Res<(i64, usize)> {
    let body = &s[1..];
    let (c, len) = if body.starts_with('\\') {
        unescape(body, '\'')?
    } else {
        let c = body.chars().next().ok_or("unterminated character constant")?;
        if c == '\'' || c == '\n' {
            return Err("empty character constant".into());
        }
        (c, c.len_utf8())
    };
    if !body[len..].starts_with('\'') {
        return Err("unterminated character constant".into());
    }
    Ok((i64::from(u32::from(c)), len + 2))
}

/// One escape sequence at the start of `s` (which starts with a backslash), as in Go's `strconv.UnquoteChar`.
/// Returns the character and the sequence's length in chars (all ASCII, so also in bytes).
fn unescape(s: &str, quote: char) -> Res<(char, usize)> {
    let b = s.as_bytes();
    let c = *b.get(1).ok_or("bad escape")? as char;
    let simple = match c {
        'a' => Some('\u{7}'),
        'b' => Some('\u{8}'),
        'f' => Some('\u{c}'),
        'n' => Some('\n'),
        'r' => Some('\r'),
        't' => Some('\t'),
        'v' => Some('\u{b}'),
        '\\' => Some('\\'),
        c if c == quote => Some(c),
        _ => None,
    };
    if let Some(ch) = simple {
        return Ok((ch, 2));
    }
    let hex = |n: usize| -> Res<u32> {
        let digits = s.get(2..2 + n).ok_or("bad escape")?;
        if !digits.bytes().all(|d| d.is_ascii_hexdigit()) {
            return Err("bad escape".into());
        }
        u32::from_str_radix(digits, 16).map_err(|_| "bad escape".to_owned())
    };
    let (code, len) = match c {
        'x' => (hex(2)?, 4),
        'u' => (hex(4)?, 6),
        'U' => (hex(8)?, 10),
        '0'..='7' => {
            let digits = s.get(1..4).ok_or("bad escape")?;
            if !digits.bytes().all(|d| (b'0'..=b'7').contains(&d)) {
                return Err("bad escape".into());
            }
            let v = u32::from_str_radix(digits, 8).map_err(|_| "bad escape".to_owned())?;
            if v > 255 {
                return Err("bad escape".into());
            }
            (v, 4)
        }
        _ => return Err("unknown escape sequence".into()),
    };
    // \x and octal escapes are bytes; above 0x7f they would make invalid UTF-8, which a Rust string cannot hold.
    if matches!(c, 'x' | '0'..='7') && code > 0x7f {
        return Err("a byte escape above \\x7f is not supported".into());
    }
    Ok((
        char::from_u32(code).ok_or("escape is not a valid character")?,
        len,
    ))
}

// ---------------------------------------------------------------------------------------------------------------
// Parser

#[derive(Clone, Debug)]
enum Node {
    Text(String),
    Action(Pipe),
    If(Pipe, Vec<Node>, Vec<Node>),
    With(Pipe, Vec<Node>, Vec<Node>),
    Range(Pipe, Vec<Node>, Vec<Node>),
    Template(String, Option<Pipe>),
    Break,
    Continue,
}

#[derive(Clone, Debug)]
struct Pipe {
    decl: Vec<String>,
    assign: bool,
    cmds: Vec<Vec<Arg>>,
}

#[derive(Clone, Debug)]
enum Arg {
    Dot,
    Field(Vec<String>),
    Var(String, Vec<String>),
    Func(String),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Nil,
    Sub(Box<Pipe>, Vec<String>),
}

const FUNCS: [&str; 20] = [
    "and",
    "call",
    "html",
    "index",
    "slice",
    "js",
    "len",
    "not",
    "or",
    "print",
    "printf",
    "println",
    "urlquery",
    "eq",
    "ge",
    "gt",
    "le",
    "lt",
    "ne",
    "joinQuoted",
];

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    vars: Vec<String>,
    range_depth: usize,
    /// How many control structures or defines enclose the current position; `define` is top-level only.
    nesting: usize,
    defines: HashMap<String, Vec<Node>>,
}

/// What ended a list of nodes.
enum Ending {
    Eof,
    End,
    Else,
    ElseIf,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn skip_space(&mut self) {
        while self.peek() == Some(&Tok::Space) {
            self.pos += 1;
        }
    }

    fn next_non_space(&mut self) -> Option<Tok> {
        self.skip_space();
        self.next()
    }

    fn expect_close(&mut self, context: &str) -> Res<()> {
        match self.next_non_space() {
            Some(Tok::Close) => Ok(()),
            _ => Err(format!("unexpected token in {context}")),
        }
    }

    /// Parses nodes until `{{end}}`, `{{else}}` or the end of input.
    fn list(&mut self) -> Res<(Vec<Node>, Ending)> {
        let mut nodes = Vec::new();
        loop {
            let Some(tok) = self.next() else {
                return Ok((nodes, Ending::Eof));
            };
            match tok {
                Tok::Text(t) => nodes.push(Node::Text(t)),
                Tok::Open => {
                    self.skip_space();
                    let word = match self.peek() {
                        Some(Tok::Ident(w)) => Some(w.clone()),
                        Some(Tok::Comment) => {
                            self.pos += 1;
                            self.expect_close("comment")?;
                            continue;
                        }
                        _ => None,
                    };
                    match word.as_deref() {
                        Some("end") => {
                            self.pos += 1;
                            self.expect_close("end")?;
                            return Ok((nodes, Ending::End));
                        }
                        Some("else") => {
                            self.pos += 1;
                            self.skip_space();
                            if matches!(self.peek(), Some(Tok::Ident(w)) if w == "if") {
                                self.pos += 1;
                                return Ok((nodes, Ending::ElseIf));
                            }
                            self.expect_close("else")?;
                            return Ok((nodes, Ending::Else));
                        }
                        Some("if" | "with" | "range") => {
                            self.pos += 1;
                            nodes.push(self.control(word.as_deref().unwrap_or_default())?);
                        }
                        Some("define") => {
                            if self.nesting > 0 {
                                return Err("unexpected <define> in command".into());
                            }
                            self.pos += 1;
                            self.define(false)?;
                        }
                        Some("block") => {
                            self.pos += 1;
                            nodes.push(self.define(true)?);
                        }
                        Some("template") => {
                            self.pos += 1;
                            nodes.push(self.template()?);
                        }
                        Some(w @ ("break" | "continue")) => {
                            let node = if w == "break" { Node::Break } else { Node::Continue };
                            if self.range_depth == 0 {
                                return Err(format!("{w} outside {{{{range}}}}"));
                            }
                            self.pos += 1;
                            self.expect_close(w)?;
                            nodes.push(node);
                        }
                        _ => {
                            let pipe = self.pipeline("command")?;
                            nodes.push(Node::Action(pipe));
                        }
                    }
                }
                t => return Err(format!("unexpected {t:?}")),
            }
        }
    }

    fn control(&mut self, kind: &str) -> Res<Node> {
        let vars = self.vars.len();
        let pipe = self.pipeline(kind)?;
        if kind == "range" {
            self.range_depth += 1;
        }
        self.nesting += 1;
        let (body, end) = self.list()?;
        self.nesting -= 1;
        if kind == "range" {
            self.range_depth -= 1;
        }
        let else_body = match end {
            Ending::Eof => return Err(format!("unexpected EOF in {kind}")),
            Ending::End => Vec::new(),
            Ending::Else => {
                self.nesting += 1;
                let (else_body, end) = self.list()?;
                self.nesting -= 1;
                if !matches!(end, Ending::End) {
                    return Err(format!("expected end in {kind}"));
                }
                else_body
            }
            // {{else if x}} is {{else}}{{if x}}...{{end}}, sharing the outer {{end}}; Go 1.19 allows it only
            // in an {{if}}.
            Ending::ElseIf if kind == "if" => vec![self.control("if")?],
            Ending::ElseIf => return Err(format!("unexpected <if> in {kind}")),
        };
        self.vars.truncate(vars);
        Ok(match kind {
            "if" => Node::If(pipe, body, else_body),
            "with" => Node::With(pipe, body, else_body),
            _ => Node::Range(pipe, body, else_body),
        })
    }

    fn template_name(&mut self) -> Res<String> {
        match self.next_non_space() {
            Some(Tok::Str(name)) => Ok(name),
            _ => Err("template name must be a string".into()),
        }
    }

    fn template(&mut self) -> Res<Node> {
        let name = self.template_name()?;
        self.skip_space();
        if self.peek() == Some(&Tok::Close) {
            self.pos += 1;
            return Ok(Node::Template(name, None));
        }
        let pipe = self.pipeline("template")?;
        Ok(Node::Template(name, Some(pipe)))
    }

    fn define(&mut self, block: bool) -> Res<Node> {
        let name = self.template_name()?;
        let call = if block {
            Some(self.pipeline("block")?)
        } else {
            self.expect_close("define")?;
            None
        };
        let saved_vars = std::mem::replace(&mut self.vars, vec!["$".to_owned()]);
        let saved_range = std::mem::replace(&mut self.range_depth, 0);
        self.nesting += 1;
        let (body, end) = self.list()?;
        self.nesting -= 1;
        self.vars = saved_vars;
        self.range_depth = saved_range;
        if !matches!(end, Ending::End) {
            return Err("unexpected end of define".into());
        }
        // As Go's parser: a second non-empty definition is an error; an empty one never replaces a body.
        let empty = |nodes: &[Node]| {
            nodes
                .iter()
                .all(|n| matches!(n, Node::Text(t) if t.trim().is_empty()))
        };
        match self.defines.get(&name) {
            Some(old) if !empty(old) && !empty(&body) => {
                return Err(format!("template: multiple definition of template {name:?}"));
            }
            Some(old) if !empty(old) => {}
            _ => {
                self.defines.insert(name.clone(), body);
            }
        }
        Ok(Node::Template(name, call))
    }

    /// A pipeline up to `)` (inside parentheses) or the action's right delimiter.
    fn pipeline(&mut self, context: &str) -> Res<Pipe> {
        let mut decl = Vec::new();
        let mut assign = false;
        self.skip_space();
        // Declarations: $x := or $x = or (range) $i, $e :=
        let start = self.pos;
        if let Some(Tok::Var(v)) = self.peek().cloned() {
            self.pos += 1;
            self.skip_space();
            match self.peek() {
                Some(Tok::Declare | Tok::Assign) => {
                    assign = self.peek() == Some(&Tok::Assign);
                    self.pos += 1;
                    decl.push(v);
                }
                Some(Tok::Comma) if context == "range" => {
                    self.pos += 1;
                    self.skip_space();
                    let Some(Tok::Var(v2)) = self.next() else {
                        return Err("range can only initialize variables".into());
                    };
                    self.skip_space();
                    match self.next() {
                        Some(Tok::Declare) => {}
                        Some(Tok::Assign) => assign = true,
                        _ => return Err("expected := in range".into()),
                    }
                    decl.push(v);
                    decl.push(v2);
                }
                _ => self.pos = start,
            }
        }
        if assign {
            for v in &decl {
                if !self.vars.contains(v) {
                    return Err(format!("undefined variable {v:?}"));
                }
            }
        }
        let mut cmds = Vec::new();
        loop {
            let cmd = self.command()?;
            cmds.push(cmd);
            self.skip_space();
            match self.next() {
                Some(Tok::Pipe) => {}
                Some(Tok::Close) if context != "paren" => break,
                Some(Tok::RParen) if context == "paren" => break,
                _ => return Err(format!("unexpected token in {context}")),
            }
        }
        // A pipeline's own variables become visible after it.
        if !assign {
            self.vars.extend(decl.iter().cloned());
        }
        // Literal commands that cannot be piped into, and nil, are refused as Go's parser does.
        for (i, cmd) in cmds.iter().enumerate() {
            if i > 0 && !matches!(cmd.first(), Some(Arg::Func(_))) {
                return Err("non executable command in pipeline stage".into());
            }
        }
        Ok(Pipe { decl, assign, cmds })
    }

    fn command(&mut self) -> Res<Vec<Arg>> {
        let mut args = Vec::new();
        loop {
            self.skip_space();
            match self.peek() {
                None | Some(Tok::Close | Tok::Pipe | Tok::RParen) => break,
                _ => {}
            }
            args.push(self.operand()?);
            // Operands must be separated by spaces.
            match self.peek() {
                Some(Tok::Space) | None | Some(Tok::Close | Tok::Pipe | Tok::RParen) => {}
                _ => return Err("missing space between operands".into()),
            }
        }
        if args.is_empty() {
            return Err("missing value for command".into());
        }
        Ok(args)
    }

    fn chain(&mut self) -> Vec<String> {
        let mut fields = Vec::new();
        while let Some(Tok::Field(f)) = self.peek().cloned() {
            self.pos += 1;
            fields.push(f);
        }
        fields
    }

    fn operand(&mut self) -> Res<Arg> {
        let tok = self.next().ok_or("unexpected EOF")?;
        let arg = match tok {
            Tok::Dot => {
                if matches!(self.peek(), Some(Tok::Field(_))) {
                    return Err("unexpected . after term".into());
                }
                Arg::Dot
            }
            Tok::Field(f) => {
                let mut chain = vec![f];
                chain.extend(self.chain());
                Arg::Field(chain)
            }
            Tok::Var(v) => {
                if !self.vars.contains(&v) {
                    return Err(format!("undefined variable {v:?}"));
                }
                let chain = self.chain();
                Arg::Var(v, chain)
            }
            Tok::Ident(name) => {
                if !FUNCS.contains(&name.as_str()) {
                    return Err(format!("function {name:?} not defined"));
                }
                Arg::Func(name)
            }
            Tok::Str(s) => Arg::Str(s),
            Tok::Char(c) => Arg::Int(c),
            Tok::Number(n) => number(&n)?,
            Tok::Bool(b) => Arg::Bool(b),
            Tok::Nil => Arg::Nil,
            Tok::LParen => {
                let pipe = self.pipeline("paren")?;
                let chain = self.chain();
                Arg::Sub(Box::new(pipe), chain)
            }
            t => return Err(format!("unexpected {t:?} in operand")),
        };
        if matches!(self.peek(), Some(Tok::Field(_))) {
            return Err("unexpected field after term".into());
        }
        Ok(arg)
    }
}

/// A number constant, typed as Go's template engine types constants: integers (any base) are `int`, anything
/// with a fraction or exponent is `float64`.
fn number(text: &str) -> Res<Arg> {
    let bad = || format!("bad number syntax: {text:?}");
    let (neg, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if body.ends_with('i') {
        return Err("complex constants are not supported".into());
    }
    let lower = body.to_ascii_lowercase();
    let clean = lower.replace('_', "");
    let (radix, digits) = if let Some(d) = clean.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = clean.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = clean.strip_prefix("0b") {
        (2, d)
    } else if clean.len() > 1 && clean.starts_with('0') && clean.bytes().all(|b| b.is_ascii_digit()) {
        (8, &clean[1..])
    } else {
        (10, clean.as_str())
    };
    let is_float = if radix == 16 {
        digits.contains(['.', 'p'])
    } else {
        radix == 10 && digits.contains(['.', 'e'])
    };
    if body.contains("__") || body.ends_with('_') || digits.is_empty() {
        return Err(bad());
    }
    if is_float {
        if radix == 16 {
            return Err("hexadecimal floating-point constants are not supported".into());
        }
        let f: f64 = digits.parse().map_err(|_| bad())?;
        return Ok(Arg::Float(if neg { -f } else { f }));
    }
    let magnitude = i128::from_str_radix(digits, radix).map_err(|_| bad())?;
    let value = if neg { -magnitude } else { magnitude };
    i64::try_from(value)
        .map(Arg::Int)
        .map_err(|_| format!("{text} overflows int"))
}

/// A parsed template: the main body and the `define`d ones.
struct Parsed {
    main: Vec<Node>,
    defines: HashMap<String, Vec<Node>>,
}

fn parse(src: &str) -> Res<Parsed> {
    let toks = lex(src)?;
    let mut p = Parser {
        toks,
        pos: 0,
        vars: vec!["$".to_owned()],
        range_depth: 0,
        nesting: 0,
        defines: HashMap::new(),
    };
    let (main, end) = p.list()?;
    match end {
        Ending::Eof => Ok(Parsed {
            main,
            defines: p.defines,
        }),
        Ending::End => Err("unexpected {{end}}".into()),
        Ending::Else | Ending::ElseIf => Err("unexpected {{else}}".into()),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Execution

/// Control flow out of a list of nodes.
enum Flow {
    Normal,
    Break,
    Continue,
}

struct Exec<'a> {
    defines: &'a HashMap<String, Vec<Node>>,
    vars: Vec<(String, Value)>,
    out: String,
    depth: usize,
}

impl Exec<'_> {
    fn list(&mut self, nodes: &[Node], dot: &Value) -> Res<Flow> {
        for node in nodes {
            match self.node(node, dot)? {
                Flow::Normal => {}
                flow => return Ok(flow),
            }
        }
        Ok(Flow::Normal)
    }

    fn scoped(&mut self, nodes: &[Node], dot: &Value) -> Res<Flow> {
        let mark = self.vars.len();
        let flow = self.list(nodes, dot);
        self.vars.truncate(mark);
        flow
    }

    fn node(&mut self, node: &Node, dot: &Value) -> Res<Flow> {
        match node {
            Node::Text(t) => self.out.push_str(t),
            Node::Action(pipe) => {
                let v = self.pipe(pipe, dot)?;
                if pipe.decl.is_empty() {
                    // An invalid (nil) value prints as "<no value>" in an action, unlike fmt's "<nil>".
                    match v {
                        Value::Nil => self.out.push_str("<no value>"),
                        v => self.out.push_str(&print_value(&v)),
                    }
                }
            }
            Node::If(pipe, body, else_body) | Node::With(pipe, body, else_body) => {
                let mark = self.vars.len();
                let v = self.pipe(pipe, dot)?;
                let with = matches!(node, Node::With(..));
                let flow = if v.truth() {
                    self.scoped(body, if with { &v } else { dot })
                } else {
                    self.scoped(else_body, dot)
                };
                self.vars.truncate(mark);
                return flow;
            }
            Node::Range(pipe, body, else_body) => {
                let mark = self.vars.len();
                let iterable = Pipe {
                    decl: Vec::new(),
                    assign: false,
                    cmds: pipe.cmds.clone(),
                };
                let v = self.pipe(&iterable, dot)?;
                // The data holds no slices or maps, and Go 1.19 ranges over nothing else: only nil (no
                // iterations) can come here without an error.
                let items: Vec<Value> = match v {
                    Value::Nil => Vec::new(),
                    other => return Err(format!("range can't iterate over {}", print_value(&other))),
                };
                if items.is_empty() {
                    let flow = self.scoped(else_body, dot);
                    self.vars.truncate(mark);
                    return flow;
                }
                for (i, item) in items.iter().enumerate() {
                    let inner = self.vars.len();
                    match pipe.decl.as_slice() {
                        [] => {}
                        [e] => self.set(e, item.clone(), pipe.assign),
                        [k, e, ..] => {
                            self.set(k, Value::Int(i64::try_from(i).unwrap_or(i64::MAX)), pipe.assign);
                            self.set(e, item.clone(), pipe.assign);
                        }
                    }
                    let flow = self.scoped(body, item)?;
                    if !pipe.assign {
                        self.vars.truncate(inner);
                    }
                    if matches!(flow, Flow::Break) {
                        break;
                    }
                }
                self.vars.truncate(mark);
            }
            Node::Template(name, pipe) => {
                let body = self
                    .defines
                    .get(name)
                    .ok_or_else(|| format!("no such template {name:?}"))?;
                let new_dot = match pipe {
                    Some(p) => self.pipe(p, dot)?,
                    None => Value::Nil,
                };
                if self.depth >= MAX_DEPTH {
                    return Err("exceeded maximum template depth".into());
                }
                let saved = std::mem::replace(&mut self.vars, vec![("$".to_owned(), new_dot.clone())]);
                self.depth += 1;
                let result = self.list(body, &new_dot);
                self.depth -= 1;
                self.vars = saved;
                result?;
            }
            Node::Break => return Ok(Flow::Break),
            Node::Continue => return Ok(Flow::Continue),
        }
        Ok(Flow::Normal)
    }

    fn set(&mut self, name: &str, value: Value, assign: bool) {
        if assign {
            if let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| n == name) {
                slot.1 = value;
            }
        } else {
            self.vars.push((name.to_owned(), value));
        }
    }

    fn var(&self, name: &str) -> Res<Value> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| format!("undefined variable: {name}"))
    }

    fn pipe(&mut self, pipe: &Pipe, dot: &Value) -> Res<Value> {
        let mut value = None;
        for cmd in &pipe.cmds {
            value = Some(self.command(cmd, dot, value)?);
        }
        let value = value.unwrap_or(Value::Nil);
        for name in &pipe.decl {
            self.set(name, value.clone(), pipe.assign);
        }
        Ok(value)
    }

    fn command(&mut self, cmd: &[Arg], dot: &Value, piped: Option<Value>) -> Res<Value> {
        let (first, args) = cmd.split_first().ok_or("empty command")?;
        if let Arg::Func(name) = first {
            return self.call(name, args, dot, piped);
        }
        if !args.is_empty() || piped.is_some() {
            return Err("can't give argument to non-function".into());
        }
        self.operand(first, dot)
    }

    fn operand(&mut self, arg: &Arg, dot: &Value) -> Res<Value> {
        match arg {
            Arg::Dot => Ok(dot.clone()),
            Arg::Field(chain) => fields(dot.clone(), chain),
            Arg::Var(name, chain) => fields(self.var(name)?, chain),
            Arg::Func(name) => self.call(name, &[], dot, None),
            Arg::Str(s) => Ok(Value::Str(s.clone())),
            Arg::Int(i) => Ok(Value::Int(*i)),
            Arg::Float(f) => Ok(Value::Float(*f)),
            Arg::Bool(b) => Ok(Value::Bool(*b)),
            Arg::Nil => Err("nil is not a command".into()),
            Arg::Sub(pipe, chain) => {
                let v = self.pipe(pipe, dot)?;
                fields(v, chain)
            }
        }
    }

    /// Evaluates a function's argument. `nil` is accepted only where Go's parameter type can be nil (`any`,
    /// `[]string`), i.e. for `nil_ok` functions.
    fn arg(&mut self, arg: &Arg, dot: &Value, nil_ok: bool) -> Res<Value> {
        match arg {
            Arg::Nil if nil_ok => Ok(Value::Nil),
            Arg::Nil => Err("cannot assign nil to reflect.Value".into()),
            other => self.operand(other, dot),
        }
    }

    fn call(&mut self, name: &str, args: &[Arg], dot: &Value, piped: Option<Value>) -> Res<Value> {
        // and/or evaluate lazily and return the deciding operand (Go 1.18+).
        if name == "and" || name == "or" {
            let total = args.len() + usize::from(piped.is_some());
            if total == 0 {
                return Err(format!("wrong number of args for {name}: want at least 1 got 0"));
            }
            let mut last = Value::Nil;
            for a in args {
                last = self.arg(a, dot, false)?;
                if last.truth() != (name == "and") {
                    return Ok(last);
                }
            }
            if let Some(p) = piped {
                last = p;
            }
            return Ok(last);
        }
        let nil_ok = matches!(
            name,
            "print" | "printf" | "println" | "html" | "js" | "urlquery" | "joinQuoted"
        );
        let mut values = Vec::with_capacity(args.len() + 1);
        for a in args {
            values.push(self.arg(a, dot, nil_ok)?);
        }
        values.extend(piped);
        call_builtin(name, &values)
    }
}

fn fields(mut v: Value, chain: &[String]) -> Res<Value> {
    for name in chain {
        v = match v {
            Value::Struct(ref fs) => fs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| format!("can't evaluate field {name} in type main.values"))?,
            Value::Nil => return Err(format!("nil data; no entry for key {name:?}")),
            ref other => {
                return Err(format!(
                    "can't evaluate field {name} in type {}",
                    other.type_name()
                ));
            }
        };
    }
    Ok(v)
}

fn arity(name: &str, args: &[Value], min: usize, max: Option<usize>) -> Res<()> {
    let n = args.len();
    if n < min || max.is_some_and(|m| n > m) {
        return Err(format!("wrong number of args for {name}: got {n}"));
    }
    Ok(())
}

fn call_builtin(name: &str, args: &[Value]) -> Res<Value> {
    match name {
        "not" => {
            arity(name, args, 1, Some(1))?;
            Ok(Value::Bool(!args[0].truth()))
        }
        "len" => {
            arity(name, args, 1, Some(1))?;
            match &args[0] {
                Value::Str(s) => Ok(Value::Int(i64::try_from(s.len()).unwrap_or(i64::MAX))),
                other => Err(format!("len of type {}", other.type_name())),
            }
        }
        "index" => {
            arity(name, args, 1, None)?;
            let mut v = args[0].clone();
            for i in &args[1..] {
                let idx = int_index(i)?;
                v = match v {
                    Value::Str(s) => Value::Uint(
                        u64::from(*s.as_bytes().get(idx).ok_or("index out of range")?),
                        "uint8",
                    ),
                    Value::Nil => return Err("index of untyped nil".into()),
                    other => return Err(format!("can't index item of type {}", other.type_name())),
                };
            }
            Ok(v)
        }
        "slice" => slice(args),
        "print" => Ok(Value::Str(sprint(args))),
        "println" => {
            let parts: Vec<String> = args.iter().map(print_value).collect();
            Ok(Value::Str(format!("{}\n", parts.join(" "))))
        }
        "printf" => {
            arity(name, args, 1, None)?;
            let Value::Str(format) = &args[0] else {
                return Err("printf's format must be a string".into());
            };
            Ok(Value::Str(sprintf(format, &args[1..])?))
        }
        "html" => Ok(Value::Str(html_escape(&escaper_text(args)))),
        "js" => Ok(Value::Str(js_escape(&escaper_text(args)))),
        "urlquery" => Ok(Value::Str(query_escape(&escaper_text(args)))),
        "eq" => {
            arity(name, args, 1, None)?;
            if args.len() == 1 {
                return Err("missing argument for comparison".into());
            }
            for other in &args[1..] {
                if compare(&args[0], other, true)? == Some(std::cmp::Ordering::Equal) {
                    return Ok(Value::Bool(true));
                }
            }
            Ok(Value::Bool(false))
        }
        "ne" | "lt" | "le" | "gt" | "ge" => {
            arity(name, args, 2, Some(2))?;
            let ord = compare(&args[0], &args[1], name == "ne")?;
            use std::cmp::Ordering::*;
            Ok(Value::Bool(match name {
                "ne" => ord != Some(Equal),
                "lt" => ord == Some(Less),
                "le" => matches!(ord, Some(Less | Equal)),
                "gt" => ord == Some(Greater),
                _ => matches!(ord, Some(Greater | Equal)),
            }))
        }
        "call" => {
            arity(name, args, 1, None)?;
            Err("call of a non-function".into())
        }
        "joinQuoted" => {
            arity(name, args, 1, Some(1))?;
            // joinQuoted(items []string): with no slices in the data, only nil (an empty list) converts.
            match &args[0] {
                Value::Nil => Ok(Value::Str(String::new())),
                other => Err(format!(
                    "joinQuoted: wrong type for value; expected []string; got {}",
                    other.type_name()
                )),
            }
        }
        other => Err(format!("function {other:?} not defined")),
    }
}

fn int_index(v: &Value) -> Res<usize> {
    match v {
        Value::Int(i) => usize::try_from(*i).map_err(|_| format!("index out of range: {i}")),
        Value::Uint(u, _) => usize::try_from(*u).map_err(|_| format!("index out of range: {u}")),
        _ => Err(format!("cannot index slice/array with type {}", v.type_name())),
    }
}

/// Go's `slice item [i [j [k]]]`: `item[i:j]` on a string (by bytes) or a list.
fn slice(args: &[Value]) -> Res<Value> {
    arity("slice", args, 1, None)?;
    let (item, indexes) = (&args[0], &args[1..]);
    let idx: Vec<usize> = indexes.iter().map(int_index).collect::<Res<_>>()?;
    let len = match item {
        Value::Str(s) => {
            if idx.len() == 3 {
                return Err("cannot 3-index slice a string".into());
            }
            s.len()
        }
        Value::Nil => return Err("slice of untyped nil".into()),
        other => return Err(format!("can't slice item of type {}", other.type_name())),
    };
    if idx.len() > 3 {
        return Err(format!("too many slice indexes: {}", idx.len()));
    }
    let cap = idx.get(2).copied().unwrap_or(len);
    let to = idx.get(1).copied().unwrap_or(len);
    let from = idx.first().copied().unwrap_or(0);
    if cap > len || to > cap || from > to {
        return Err("index out of range".into());
    }
    match item {
        Value::Str(s) => s
            .get(from..to)
            .map(|s| Value::Str(s.to_owned()))
            .ok_or_else(|| "slice cuts a UTF-8 character (Go would write invalid UTF-8)".to_owned()),
        _ => unreachable!("checked above"),
    }
}

#[derive(PartialEq)]
enum Kind {
    Bool,
    Int,
    Uint,
    Float,
    Str,
    Other,
}

fn kind(v: &Value) -> Kind {
    match v {
        Value::Bool(_) => Kind::Bool,
        Value::Int(_) => Kind::Int,
        Value::Uint(..) => Kind::Uint,
        Value::Float(_) => Kind::Float,
        Value::Str(_) => Kind::Str,
        _ => Kind::Other,
    }
}

/// Go's comparison of basic kinds; `Ok(None)` when unordered (bools). Mixed signed/unsigned integers compare by
/// value; other mixed kinds are an error, as in Go.
fn compare(a: &Value, b: &Value, equality: bool) -> Res<Option<std::cmp::Ordering>> {
    use Value::*;
    Ok(match (a, b) {
        (Int(x), Uint(y, _)) => Some(if *x < 0 {
            std::cmp::Ordering::Less
        } else {
            (*x as u64).cmp(y)
        }),
        (Uint(x, _), Int(y)) => Some(if *y < 0 {
            std::cmp::Ordering::Greater
        } else {
            x.cmp(&(*y as u64))
        }),
        _ if kind(a) != kind(b) => return Err("incompatible types for comparison".into()),
        (Bool(x), Bool(y)) => {
            if !equality {
                return Err("invalid type for comparison".into());
            }
            (x == y).then_some(std::cmp::Ordering::Equal)
        }
        (Int(x), Int(y)) => Some(x.cmp(y)),
        (Uint(x, _), Uint(y, _)) => Some(x.cmp(y)),
        (Float(x), Float(y)) => x.partial_cmp(y),
        (Str(x), Str(y)) => Some(x.cmp(y)),
        _ => return Err("invalid type for comparison".into()),
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Printing, as Go's fmt does it

/// `fmt.Sprint` of one value (`%v`).
fn print_value(v: &Value) -> String {
    match v {
        Value::Nil => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Uint(u, _) => u.to_string(),
        Value::Float(f) => format_float_shortest(*f),
        Value::Str(s) => s.clone(),
        Value::Struct(fs) => format!(
            "{{{}}}",
            fs.iter()
                .map(|(_, v)| print_value(v))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

/// `fmt.Sprint`: a space between operands when neither is a string.
fn sprint(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, v) in args.iter().enumerate() {
        if i > 0 && !matches!(v, Value::Str(_)) && !matches!(args[i - 1], Value::Str(_)) {
            out.push(' ');
        }
        out.push_str(&print_value(v));
    }
    out
}

/// Go's `%v` for a float64 (`strconv` 'g' with the shortest precision): shortest digits, exponent form when the
/// decimal exponent is below -4 or at least 6.
fn format_float_shortest(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        format!("{mantissa}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    } else {
        format!("{f}")
    }
}

/// Go's `strconv.Quote`.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        quote_char_into(&mut out, c, '"');
    }
    out.push('"');
    out
}

fn quote_char_into(out: &mut String, c: char, quote: char) {
    match c {
        c if c == quote || c == '\\' => {
            out.push('\\');
            out.push(c);
        }
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        c if (c as u32) < 0x20 || c == '\u{7f}' => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if !is_print(c) => {
            if (c as u32) < 0x10000 {
                let _ = write!(out, "\\u{:04x}", c as u32);
            } else {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
        c => out.push(c),
    }
}

/// An approximation of Go's `unicode.IsPrint` that is exact for ASCII: no control characters, and among
/// spaces only U+0020.
fn is_print(c: char) -> bool {
    !c.is_control()
        && (c == ' ' || !c.is_whitespace())
        && !matches!(c, '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}')
}

/// The text Go's escapers (`html`, `js`, `urlquery`) work on: a lone string as is, else `fmt.Sprint`.
fn escaper_text(args: &[Value]) -> String {
    match args {
        [Value::Str(s)] => s.clone(),
        _ => sprint(args),
    }
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
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
    out
}

fn js_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' => out.push_str("\\u003C"),
            '>' => out.push_str("\\u003E"),
            '&' => out.push_str("\\u0026"),
            '=' => out.push_str("\\u003D"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u00{:02X}", c as u32);
            }
            c if !c.is_ascii() && !is_print(c) => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Go's `url.QueryEscape`.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            b => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// One `%` directive's flags.
#[derive(Default)]
struct Spec {
    plus: bool,
    minus: bool,
    sharp: bool,
    space: bool,
    zero: bool,
    width: Option<usize>,
    precision: Option<usize>,
}

impl Spec {
    fn pad(&self, body: String) -> String {
        let len = body.chars().count();
        let Some(width) = self.width.filter(|w| *w > len) else {
            return body;
        };
        let fill = width - len;
        if self.minus {
            format!("{body}{}", " ".repeat(fill))
        } else if self.zero {
            format!("{}{body}", "0".repeat(fill))
        } else {
            format!("{}{body}", " ".repeat(fill))
        }
    }

    /// Go's fmtInteger: sign, optional prefix, digits with precision or zero padding, then width.
    fn integer(&self, negative: bool, magnitude: u128, verb: char) -> String {
        let mut digits = match verb {
            'x' => format!("{magnitude:x}"),
            'X' => format!("{magnitude:X}"),
            'o' | 'O' => format!("{magnitude:o}"),
            'b' => format!("{magnitude:b}"),
            _ => magnitude.to_string(),
        };
        let sign = if negative {
            "-"
        } else if self.plus {
            "+"
        } else if self.space {
            " "
        } else {
            ""
        };
        if self.precision == Some(0) && magnitude == 0 {
            digits.clear();
        }
        let min_digits = match self.precision {
            Some(p) => p,
            None if self.zero && !self.minus => self
                .width
                .unwrap_or(0)
                .saturating_sub(usize::from(!sign.is_empty())),
            None => 0,
        };
        let prefix = match verb {
            'x' if self.sharp => "0x",
            'X' if self.sharp => "0X",
            'b' if self.sharp => "0b",
            'O' => "0o",
            'o' if self.sharp && !digits.starts_with('0') => "0",
            _ => "",
        };
        if digits.len() < min_digits {
            digits = format!("{}{digits}", "0".repeat(min_digits - digits.len()));
        }
        let body = format!("{sign}{prefix}{digits}");
        // Zero padding was done through the digits; the width pads with spaces.
        Spec {
            zero: false,
            ..self.clone_flags()
        }
        .pad(body)
    }

    fn clone_flags(&self) -> Spec {
        Spec {
            plus: self.plus,
            minus: self.minus,
            sharp: self.sharp,
            space: self.space,
            zero: self.zero,
            width: self.width,
            precision: self.precision,
        }
    }
}

/// `fmt.Sprintf` for the verbs a values template may reasonably use. Wrong verb/argument pairs render as Go
/// renders them (`%!d(string=x)`); verbs or flags not implemented here are an error, never a guess.
fn sprintf(format: &str, args: &[Value]) -> Res<String> {
    let mut out = String::new();
    let mut next_arg = 0;
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec::default();
        while let Some(&f) = chars.peek() {
            match f {
                '+' => spec.plus = true,
                '-' => spec.minus = true,
                '#' => spec.sharp = true,
                ' ' => spec.space = true,
                '0' => spec.zero = !spec.minus,
                _ => break,
            }
            chars.next();
        }
        if spec.minus {
            spec.zero = false;
        }
        let number = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| -> Option<usize> {
            let mut n: Option<usize> = None;
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                n = Some(n.unwrap_or(0).saturating_mul(10).saturating_add(d as usize));
                chars.next();
            }
            n
        };
        if chars.peek() == Some(&'*') || chars.peek() == Some(&'[') {
            return Err("printf: '*' widths and explicit argument indexes are not supported".into());
        }
        spec.width = number(&mut chars);
        if chars.peek() == Some(&'.') {
            chars.next();
            if chars.peek() == Some(&'*') {
                return Err("printf: '*' precision is not supported".into());
            }
            spec.precision = Some(number(&mut chars).unwrap_or(0));
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next_arg) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        next_arg += 1;
        out.push_str(&format_one(&spec, verb, arg)?);
    }
    if next_arg < args.len() {
        out.push_str("%!(EXTRA ");
        let extra: Vec<String> = args[next_arg..]
            .iter()
            .map(|a| match a {
                Value::Nil => "<nil>".to_owned(),
                a => format!("{}={}", a.type_name(), print_value(a)),
            })
            .collect();
        out.push_str(&extra.join(", "));
        out.push(')');
    }
    Ok(out)
}

fn bad_verb(verb: char, arg: &Value) -> String {
    match arg {
        Value::Nil => format!("%!{verb}(<nil>)"),
        a => format!("%!{verb}({}={})", a.type_name(), print_value(a)),
    }
}

fn format_one(spec: &Spec, verb: char, arg: &Value) -> Res<String> {
    if verb == 'T' {
        return Ok(spec.pad(arg.type_name().to_owned()));
    }
    let unsupported = || Err(format!("printf: %{verb} is not supported for this value"));
    Ok(match arg {
        Value::Nil => match verb {
            'v' => spec.pad("<nil>".to_owned()),
            _ => bad_verb(verb, arg),
        },
        Value::Bool(b) => match verb {
            'v' | 't' => spec.pad(b.to_string()),
            'd' | 's' | 'q' | 'x' | 'X' | 'o' | 'O' | 'b' | 'c' | 'U' | 'e' | 'E' | 'f' | 'F' | 'g' | 'G' => {
                bad_verb(verb, arg)
            }
            _ => return unsupported(),
        },
        Value::Int(_) | Value::Uint(..) => {
            let (negative, magnitude) = match arg {
                Value::Int(i) => (*i < 0, u128::from(i.unsigned_abs())),
                Value::Uint(u, _) => (false, u128::from(*u)),
                _ => unreachable!("matched above"),
            };
            match verb {
                'v' | 'd' if !spec.sharp => spec.integer(negative, magnitude, 'd'),
                'x' | 'X' | 'o' | 'O' | 'b' => spec.integer(negative, magnitude, verb),
                'c' | 'q' | 'U' if negative => return unsupported(),
                'c' => spec.pad(
                    char::from_u32(u32::try_from(magnitude).unwrap_or(0xFFFD))
                        .unwrap_or('\u{FFFD}')
                        .to_string(),
                ),
                'q' if !spec.sharp && !spec.plus => {
                    let c = char::from_u32(u32::try_from(magnitude).unwrap_or(0xFFFD)).unwrap_or('\u{FFFD}');
                    let mut q = String::from('\'');
                    quote_char_into(&mut q, c, '\'');
                    q.push('\'');
                    spec.pad(q)
                }
                'U' if !spec.sharp => spec.pad(format!("U+{magnitude:04X}")),
                's' | 't' | 'e' | 'E' | 'f' | 'F' | 'g' | 'G' => bad_verb(verb, arg),
                _ => return unsupported(),
            }
        }
        Value::Float(f) => match verb {
            'v' | 'g' if spec.precision.is_none() && !spec.sharp => {
                sign_float(spec, format_float_shortest(*f))
            }
            'f' | 'F' => sign_float(spec, format!("{:.*}", spec.precision.unwrap_or(6), f)),
            'e' | 'E' => {
                let s = format!("{:.*e}", spec.precision.unwrap_or(6), f);
                let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
                let e: i32 = e.parse().unwrap_or(0);
                let s = format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
                let s = if verb == 'E' { s.to_uppercase() } else { s };
                sign_float(spec, s)
            }
            'd' | 's' | 't' | 'c' | 'q' | 'U' | 'o' | 'O' => bad_verb(verb, arg),
            _ => return unsupported(),
        },
        Value::Str(s) => {
            let truncated: String = match spec.precision {
                Some(p) => s.chars().take(p).collect(),
                None => s.clone(),
            };
            match verb {
                'v' | 's' if !spec.sharp => spec.pad(truncated),
                'q' if !spec.sharp && !spec.plus => spec.pad(go_quote(&truncated)),
                'x' | 'X' if !spec.sharp && !spec.space => {
                    let bytes = match spec.precision {
                        Some(p) => &s.as_bytes()[..p.min(s.len())],
                        None => s.as_bytes(),
                    };
                    let hex: String = bytes
                        .iter()
                        .map(|b| {
                            if verb == 'x' {
                                format!("{b:02x}")
                            } else {
                                format!("{b:02X}")
                            }
                        })
                        .collect();
                    spec.pad(hex)
                }
                'd' | 't' | 'c' | 'U' | 'e' | 'E' | 'f' | 'F' | 'g' | 'G' | 'o' | 'O' | 'b' => {
                    bad_verb(verb, arg)
                }
                _ => return unsupported(),
            }
        }
        Value::Struct(_) => match verb {
            'v' if !spec.sharp && !spec.plus => spec.pad(print_value(arg)),
            _ => return unsupported(),
        },
    })
}

/// Adds the sign flags to a formatted float and pads it as Go's fmtFloat does: zeros go after the sign.
fn sign_float(spec: &Spec, s: String) -> String {
    let (sign, digits) = match s.strip_prefix('-') {
        Some(d) => ("-", d.to_owned()),
        None if spec.plus => ("+", s),
        None if spec.space => (" ", s),
        None => ("", s),
    };
    let len = sign.len() + digits.chars().count();
    match spec.width {
        Some(w)
            if w > len
                && spec.zero
                && !spec.minus
                && digits.bytes().all(|b| {
                    b.is_ascii_digit() || b == b'.' || b == b'e' || b == b'E' || b == b'+' || b == b'-'
                }) =>
        {
            format!("{sign}{}{digits}", "0".repeat(w - len))
        }
        _ => Spec {
            zero: false,
            ..spec.clone_flags()
        }
        .pad(format!("{sign}{digits}")),
    }
}

// ---------------------------------------------------------------------------------------------------------------

/// Parses and executes `template` with `data` as dot, as Go's `text/template` would with CAREN's `joinQuoted`.
pub(crate) fn render(template: &str, data: Value) -> Result<String, RenderError> {
    let parsed = parse(template).map_err(RenderError::Parse)?;
    let mut exec = Exec {
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
