//! Conversions between `serde_json::Value` and `google.protobuf.Struct`, so the executor can return rendered
//! Kubernetes objects that grpcurl prints as ordinary JSON.

use prost_types::{ListValue, Struct, Value, value::Kind};

/// Converts a JSON object into a protobuf `Struct`. A non-object value is wrapped as `{"value": …}`, because a
/// `Struct` can only hold an object at its top level.
pub fn json_to_struct(json: serde_json::Value) -> Struct {
    match json {
        serde_json::Value::Object(map) => Struct {
            fields: map.into_iter().map(|(k, v)| (k, json_to_value(v))).collect(),
        },
        other => Struct {
            fields: [("value".to_owned(), json_to_value(other))].into_iter().collect(),
        },
    }
}

/// Converts a protobuf `Struct` back into a JSON object. Numbers come back as floats (protobuf has no integer
/// `Value`), except that whole numbers are returned as integers.
pub fn struct_to_json(s: &Struct) -> serde_json::Value {
    serde_json::Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

fn json_to_value(json: serde_json::Value) -> Value {
    let kind = match json {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(items) => Kind::ListValue(ListValue {
            values: items.into_iter().map(json_to_value).collect(),
        }),
        obj @ serde_json::Value::Object(_) => Kind::StructValue(json_to_struct(obj)),
    };
    Value { kind: Some(kind) }
}

fn value_to_json(v: &Value) -> serde_json::Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
                serde_json::Value::from(*n as i64)
            } else {
                serde_json::Number::from_f64(*n).map_or(serde_json::Value::Null, serde_json::Value::Number)
            }
        }
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::ListValue(l)) => serde_json::Value::Array(l.values.iter().map(value_to_json).collect()),
        Some(Kind::StructValue(s)) => struct_to_json(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_object_round_trips() {
        let obj = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "ntnx-system", "labels": {"a": "b"}},
            "spec": {"list": [1, "two", true, null], "port": 9440, "ratio": 0.5}
        });
        assert_eq!(struct_to_json(&json_to_struct(obj.clone())), obj);
    }

    #[test]
    fn scalar_is_wrapped() {
        let s = json_to_struct(serde_json::json!("x"));
        assert_eq!(struct_to_json(&s), serde_json::json!({"value": "x"}));
    }
}
