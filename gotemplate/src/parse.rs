//! Parsing tokens into a tree, with the checks Go's parser makes: functions and variables must be defined,
//! `break`/`continue` only inside `range`, `define` only at the top level.

use std::collections::HashMap;

use super::Res;
use super::lex::{Tok, lex};

#[derive(Clone, Debug)]
pub(super) enum Node {
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
pub(super) struct Pipe {
    pub(super) decl: Vec<String>,
    pub(super) assign: bool,
    pub(super) cmds: Vec<Vec<Arg>>,
}

#[derive(Clone, Debug)]
pub(super) enum Arg {
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

pub(super) const FUNCS: [&str; 20] = [
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

pub(super) struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    vars: Vec<String>,
    range_depth: usize,
    /// How many control structures or defines enclose the current position; `define` is top-level only.
    nesting: usize,
    pub(super) defines: HashMap<String, Vec<Node>>,
}

/// What ended a list of nodes.
pub(super) enum Ending {
    Eof,
    End,
    Else,
    ElseIf,
    ElseWith,
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
                            match self.peek() {
                                Some(Tok::Ident(w)) if w == "if" => {
                                    self.pos += 1;
                                    return Ok((nodes, Ending::ElseIf));
                                }
                                Some(Tok::Ident(w)) if w == "with" => {
                                    self.pos += 1;
                                    return Ok((nodes, Ending::ElseWith));
                                }
                                _ => {}
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
            // {{else if x}} is {{else}}{{if x}}...{{end}}, sharing the outer {{end}}, and so is {{else with x}}
            // (Go 1.23); each only in its own kind of block.
            Ending::ElseIf if kind == "if" => vec![self.control("if")?],
            Ending::ElseWith if kind == "with" => vec![self.control("with")?],
            Ending::ElseIf | Ending::ElseWith => return Err(format!("unexpected else-clause in {kind}")),
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
        // Declarations: `$x :=`, `$x =`, and in a range `$i, $e :=` or `$i, $e =`. As in Go's parser, a
        // variable is in scope from its declaration on (even within its own pipeline), and an assignment names
        // it too: whether it exists is checked when the assignment runs.
        loop {
            let start = self.pos;
            let Some(Tok::Var(v)) = self.peek().cloned() else {
                break;
            };
            self.pos += 1;
            self.skip_space();
            match self.peek() {
                Some(Tok::Declare | Tok::Assign) => {
                    assign = self.peek() == Some(&Tok::Assign);
                    self.pos += 1;
                    decl.push(v.clone());
                    self.vars.push(v);
                    break;
                }
                Some(Tok::Comma) => {
                    self.pos += 1;
                    decl.push(v.clone());
                    self.vars.push(v);
                    if context == "range" && decl.len() < 2 {
                        self.skip_space();
                        if matches!(self.peek(), Some(Tok::Var(_) | Tok::Close | Tok::RParen)) {
                            continue;
                        }
                        return Err("range can only initialize variables".into());
                    }
                    return Err(format!("too many declarations in {context}"));
                }
                _ => {
                    self.pos = start;
                    break;
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
pub(super) fn number(text: &str) -> Res<Arg> {
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
pub(super) struct Parsed {
    pub(super) main: Vec<Node>,
    pub(super) defines: HashMap<String, Vec<Node>>,
}

pub(super) fn parse(src: &str) -> Res<Parsed> {
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
        Ending::Else | Ending::ElseIf | Ending::ElseWith => Err("unexpected {{else}}".into()),
    }
}
