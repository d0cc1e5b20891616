//! Reading raw JSON without building a tree: a key of an object, a path, a condition, a map of strings.

use super::*;

pub(super) fn is_null(raw: &RawValue) -> bool {
    raw.get() == "null"
}

/// The value at `key` of a raw JSON object, borrowed from it: `Ok(None)` when the object is `null` or has no such
/// key, `Err` when it is not an object. Other keys are skipped without being parsed. A repeated key counts as its
/// last occurrence, as in any JSON map.
pub(super) fn field<'a>(raw: &'a RawValue, key: &str) -> Result<Option<&'a RawValue>, ()> {
    struct Field<'k>(&'k str);

    impl<'de> Visitor<'de> for Field<'_> {
        type Value = Option<&'de RawValue>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object or null")
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(wanted) = map.next_key_seed(KeyIs(self.0))? {
                if wanted {
                    found = Some(map.next_value::<&'de RawValue>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }

    let mut de = serde_json::Deserializer::from_str(raw.get());
    de.deserialize_any(Field(key)).map_err(|_| ())
}

/// A map key, compared with the one wanted without being kept.
pub(super) struct KeyIs<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

/// Follows `path` through raw objects: `Ok(None)` when a step is absent or null, `Err(i)` when step `i` is not
/// an object.
pub(super) fn path_of<'a>(raw: &'a RawValue, path: &[&str]) -> Result<Option<&'a RawValue>, usize> {
    let mut cur = raw;
    for (i, key) in path.iter().enumerate() {
        match field(cur, key) {
            Ok(Some(next)) => cur = next,
            Ok(None) => return Ok(None),
            Err(()) => return Err(i),
        }
    }
    Ok(Some(cur))
}

/// Looks up `path` inside a variable value. `Ok(None)` when a step is absent or null; an error when a step exists
/// but is not an object, because then the variable does not have the shape konnector reads.
pub(super) fn lookup<'a>(
    variable: &str,
    value: &'a RawValue,
    path: &[&str],
) -> Result<Option<&'a RawValue>, DecodeError> {
    path_of(value, path).map_err(|i| malformed(variable, &path[..i]))
}

/// Whether a raw `conditions` list has `ControlPlaneInitialized=True`, scanning it one condition at a time (and
/// only their `type` and `status`). Anything but a list of objects has none.
pub(super) fn control_plane_initialized_condition(conditions: &RawValue) -> bool {
    #[derive(Deserialize)]
    struct Condition {
        #[serde(rename = "type")]
        kind: Option<String>,
        status: Option<String>,
    }

    struct Any;

    impl<'de> Visitor<'de> for Any {
        type Value = bool;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of conditions")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
            let mut found = false;
            while let Some(c) = seq.next_element::<Condition>()? {
                found |= c.kind.as_deref() == Some("ControlPlaneInitialized")
                    && c.status.as_deref() == Some("True");
            }
            Ok(found)
        }
    }

    let mut de = serde_json::Deserializer::from_str(conditions.get());
    de.deserialize_any(Any).unwrap_or(false)
}

/// A map of strings kept raw: checked while decoding (so a Cluster whose labels are not strings is not a Cluster,
/// as before), without keeping a single entry.
pub(super) fn string_map_raw<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Raw>, D::Error> {
    struct Strings;

    impl<'de> Visitor<'de> for Strings {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of strings")
        }

        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            Ok(())
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while map.next_key_seed(AnyStr)?.is_some() {
                map.next_value_seed(AnyStr)?;
            }
            Ok(())
        }
    }

    /// A string, looked at and not kept.
    struct AnyStr;

    impl<'de> DeserializeSeed<'de> for AnyStr {
        type Value = ();

        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
            deserializer.deserialize_str(self)
        }
    }

    impl Visitor<'_> for AnyStr {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }

        fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
    }

    let raw = Option::<Raw>::deserialize(deserializer)?;
    if let Some(raw) = &raw {
        let mut de = serde_json::Deserializer::from_str(raw.get());
        de.deserialize_any(Strings)
            .map_err(|_| de::Error::custom("not a map of strings"))?;
    }
    Ok(raw)
}

/// A raw map of strings (labels, annotations); empty when absent or of another shape.
pub(super) fn string_map(raw: Option<&RawValue>) -> BTreeMap<String, String> {
    raw.and_then(|raw| serde_json::from_str::<Option<BTreeMap<String, String>>>(raw.get()).ok())
        .flatten()
        .unwrap_or_default()
}
