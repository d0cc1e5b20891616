//! The rendered YAML compared, key path by key path, with the template rendered from inert placeholders: no input
//! can add, remove or retype a key.

use std::collections::BTreeMap;

use serde_yaml_ng::Value as Yaml;

use super::{Field, RenderError, TemplateValues, input_label, is_yaml11_only_boolean, render_values};

/// The shape of a YAML document: every key path with the kind of node found there.
type Shape = BTreeMap<String, &'static str>;

pub(super) fn shape(yaml: &Yaml) -> Shape {
    fn walk(node: &Yaml, path: String, out: &mut Shape) {
        let kind = match node {
            Yaml::Null => "null",
            Yaml::Bool(_) => "boolean",
            Yaml::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Yaml::Number(_) => "float",
            Yaml::String(_) => "string",
            Yaml::Sequence(_) => "sequence",
            Yaml::Mapping(_) => "mapping",
            Yaml::Tagged(_) => "tagged value",
        };
        match node {
            Yaml::Mapping(m) => {
                for (k, v) in m {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        // A non-string key is structure too; its kind is recorded, not its text.
                        other => format!("<{} key>", shape_kind(other)),
                    };
                    walk(v, format!("{path}.{key}"), out);
                }
            }
            Yaml::Sequence(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(v, format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
        out.insert(if path.is_empty() { ".".to_owned() } else { path }, kind);
    }
    let mut out = Shape::new();
    walk(yaml, String::new(), &mut out);
    out
}

pub(super) fn shape_kind(y: &Yaml) -> &'static str {
    shape(y).get(".").copied().unwrap_or("node")
}

pub(super) fn parse_yaml(yaml: &str) -> Result<Yaml, String> {
    // Position only: the parser's message can quote the text around the error, which may be an input.
    serde_yaml_ng::from_str::<Yaml>(yaml).map_err(|e| match e.location() {
        Some(l) => format!("invalid YAML at line {} column {}", l.line(), l.column()),
        None => "invalid YAML".to_owned(),
    })
}

/// Renders the template again with inert placeholders for every string input and requires the real rendering
/// to have the same key paths with the same kinds of node. When it does not, the inputs are put back one at a
/// time to name the one responsible. Returns the parsed real values.
pub fn check_structure(template: &str, values: &TemplateValues, yaml: &str) -> Result<Yaml, RenderError> {
    let inert =
        render_values(template, &values.placeholders(None)).map_err(|_| RenderError::StructureChanged {
            input: "(undetermined)".to_owned(),
            detail: "the template renders with the real inputs but not with placeholders of the same length"
                .to_owned(),
        })?;
    let inert_shape = shape(&parse_yaml(&inert).map_err(|e| {
        RenderError::NotYaml(format!(
            "{e} (even with placeholder inputs: the template itself is not YAML)"
        ))
    })?);
    let real = parse_yaml(yaml);
    let difference = |candidate: &Result<Yaml, String>| -> Option<String> {
        match candidate {
            Err(e) => Some(e.clone()),
            Ok(y) => first_difference(&inert_shape, &shape(y)),
        }
    };
    let Some(detail) = difference(&real) else {
        // Helm reads values as YAML 1.1, where a plain `no`, `on`, `yes`, `off`, `y` or `n` is a boolean; the
        // parser here is YAML 1.2, where they are strings. For an input holding one of those words, render again
        // with `true` (a boolean in both) in its place: if the shape changes, the template leaves it unquoted, and
        // Helm would read the real value as a boolean too.
        for (name, field) in values.fields() {
            let Field::Str(text) = field else { continue };
            if !is_yaml11_only_boolean(text) {
                continue;
            }
            let probe = values.placeholders(None).with_string(name, "true");
            if let Ok(one) = render_values(template, &probe)
                && let Some(d) = difference(&parse_yaml(&one))
            {
                return Err(RenderError::StructureChanged {
                    input: input_label(name).to_owned(),
                    detail: format!(
                        "Helm reads values as YAML 1.1, which takes this unquoted input as a boolean ({d}); quote it in the values template"
                    ),
                });
            }
        }
        return Ok(real.unwrap_or(Yaml::Null));
    };
    // Name the culprit: the first input that, alone among placeholders, changes the shape.
    let culprit = values.fields().into_iter().find_map(|(name, field)| {
        let Field::Str(_) = field else { return None };
        let one = render_values(template, &values.placeholders(Some(name))).ok()?;
        difference(&parse_yaml(&one)).map(|d| (name, d))
    });
    Err(match culprit {
        Some((name, detail)) => RenderError::StructureChanged {
            input: input_label(name).to_owned(),
            detail,
        },
        None => RenderError::StructureChanged {
            input: "a combination of inputs".to_owned(),
            detail,
        },
    })
}

fn first_difference(expected: &Shape, actual: &Shape) -> Option<String> {
    for (path, kind) in expected {
        match actual.get(path) {
            None => return Some(format!("key {path} disappears")),
            Some(k) if k != kind => {
                return Some(format!("key {path} changes from {kind} to {k}"));
            }
            Some(_) => {}
        }
    }
    actual
        .keys()
        .find(|p| !expected.contains_key(*p))
        .map(|_| "a key is added".to_owned())
}
