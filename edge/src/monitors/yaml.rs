//! The ordered YAML the generator writes (the operator's `yaml.MapSlice`): key order kept when written
//! and when read back, so `/api/v1/status/config` shows jobs as the operator orders them.

use serde::ser::{SerializeMap, SerializeSeq};

/// An ordered YAML value (the operator's `yaml.MapSlice`).
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Null,
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

impl serde::Serialize for Node {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => s.serialize_unit(),
            Node::Str(v) => s.serialize_str(v),
            Node::Int(v) => s.serialize_i64(*v),
            Node::Float(v) => s.serialize_f64(*v),
            Node::Bool(v) => s.serialize_bool(*v),
            Node::Seq(v) => {
                let mut q = s.serialize_seq(Some(v.len()))?;
                for x in v {
                    q.serialize_element(x)?;
                }
                q.end()
            }
            Node::Map(v) => {
                let mut m = s.serialize_map(Some(v.len()))?;
                for (k, x) in v {
                    m.serialize_entry(k, x)?;
                }
                m.end()
            }
        }
    }
}

/// Reads any YAML keeping the order of mapping keys (for showing a file with jobs added).
impl<'de> serde::Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_some<D2: serde::Deserializer<'de>>(self, d: D2) -> Result<Node, D2::Error> {
                serde::Deserialize::deserialize(d)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
                Ok(i64::try_from(v).map_or(Node::Float(v as f64), Node::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Str(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Node, E> {
                Ok(Node::Str(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                Ok(Node::Seq(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut v = Vec::new();
                while let Some((k, x)) = a.next_entry::<Node, Node>()? {
                    let k = match k {
                        Node::Str(s) => s,
                        Node::Int(i) => i.to_string(),
                        Node::Bool(b) => b.to_string(),
                        Node::Float(f) => f.to_string(),
                        _ => return Err(serde::de::Error::custom("mapping key is not a scalar")),
                    };
                    v.push((k, x));
                }
                Ok(Node::Map(v))
            }
        }
        d.deserialize_any(V)
    }
}

pub(super) fn s(v: &str) -> Node {
    Node::Str(v.to_owned())
}

pub(super) fn strs(v: &[&str]) -> Node {
    Node::Seq(v.iter().map(|x| s(x)).collect())
}

/// A map from `(key, value)` pairs.
pub(super) fn map<const N: usize>(items: [(&str, Node); N]) -> Node {
    Node::Map(items.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// Builds a map key by key.
#[derive(Default)]
pub(super) struct MapBuilder(pub(super) Vec<(String, Node)>);

impl MapBuilder {
    pub(super) fn put(&mut self, k: &str, v: Node) {
        self.0.push((k.to_owned(), v));
    }

    pub(super) fn opt<T>(&mut self, k: &str, v: Option<T>, f: impl FnOnce(T) -> Node) {
        if let Some(v) = v {
            self.put(k, f(v));
        }
    }

    pub(super) fn done(self) -> Node {
        Node::Map(self.0)
    }
}
