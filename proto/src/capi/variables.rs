//! Decoding `spec.topology`'s variables: only the ones konnector reads are kept, as raw JSON text.

use super::*;

impl<'de> Deserialize<'de> for ClusterVariable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(VariableVisitor)
    }
}

pub(super) struct VariableVisitor;

impl<'de> Visitor<'de> for VariableVisitor {
    type Value = ClusterVariable;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a {name, value} variable")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ClusterVariable, A::Error> {
        let mut name: Option<String> = None;
        let mut value: Option<Raw> = None;
        while let Some(key) = map.next_key::<VariableKey>()? {
            match key {
                VariableKey::Name => name = map.next_value()?,
                // The name came first and konnector does not read this variable: skip the value unparsed.
                VariableKey::Value if name.as_deref().is_some_and(|n| !READ_VARIABLES.contains(&n)) => {
                    map.next_value::<IgnoredAny>()?;
                    value = None;
                }
                VariableKey::Value => value = map.next_value()?,
                VariableKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(ClusterVariable { name, value })
    }
}

pub(super) enum VariableKey {
    Name,
    Value,
    Other,
}

impl<'de> Deserialize<'de> for VariableKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;

        impl Visitor<'_> for V {
            type Value = VariableKey;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }

            fn visit_str<E: de::Error>(self, key: &str) -> Result<VariableKey, E> {
                Ok(match key {
                    "name" => VariableKey::Name,
                    "value" => VariableKey::Value,
                    _ => VariableKey::Other,
                })
            }
        }

        deserializer.deserialize_str(V)
    }
}

/// A list of `T`, keeping only the elements `keep` accepts as they are decoded one by one (`null` is `None`).
pub(super) struct Kept<T> {
    keep: fn(&T) -> bool,
    _t: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for Kept<T> {
    type Value = Option<Vec<T>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list or null")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut kept = Vec::new();
        while let Some(item) = seq.next_element::<T>()? {
            if (self.keep)(&item) {
                kept.push(item);
            }
        }
        Ok(Some(kept))
    }
}

pub(super) fn kept<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
    keep: fn(&T) -> bool,
) -> Result<Option<Vec<T>>, D::Error> {
    deserializer.deserialize_option(Kept {
        keep,
        _t: PhantomData,
    })
}

pub(super) fn read_variables<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<ClusterVariable>>, D::Error> {
    kept(deserializer, |v: &ClusterVariable| {
        v.name.as_deref().is_some_and(|n| READ_VARIABLES.contains(&n))
    })
}

pub(super) fn read_machine_deployments<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<MachineDeploymentTopology>>, D::Error> {
    kept(deserializer, |md: &MachineDeploymentTopology| {
        md.variables
            .as_ref()
            .and_then(|v| v.overrides.as_ref())
            .is_some_and(|o| !o.is_empty())
    })
}
