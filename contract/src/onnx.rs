//! A minimal ONNX writer (and reader of what it writes).
//!
//! Only the subset of `onnx.proto` that our models use, as prost messages with
//! the field tags of the ONNX schema. The published ONNX crates are stale or
//! broken, and this subset is small enough to own. Files written here pass
//! ONNX's checker and run in ONNX Runtime.

use prost::Message;

/// IR version 8 is read by every ONNX Runtime since 1.10.
pub const IR_VERSION: i64 = 8;
/// Opset of the default domain; 17 has every operator we emit.
pub const OPSET: i64 = 17;

/// `TensorProto.DataType.FLOAT`.
pub const FLOAT: i32 = 1;
/// `TensorProto.DataType.INT64`.
pub const INT64: i32 = 7;

/// `ModelProto`: the file.
#[derive(Clone, PartialEq, Message)]
pub struct ModelProto {
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    #[prost(string, tag = "2")]
    pub producer_name: String,
    #[prost(string, tag = "3")]
    pub producer_version: String,
    #[prost(string, tag = "4")]
    pub domain: String,
    #[prost(int64, tag = "5")]
    pub model_version: i64,
    #[prost(string, tag = "6")]
    pub doc_string: String,
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

/// `OperatorSetIdProto`.
#[derive(Clone, PartialEq, Message)]
pub struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(int64, tag = "2")]
    pub version: i64,
}

/// `StringStringEntryProto`: one metadata key/value.
#[derive(Clone, PartialEq, Message)]
pub struct StringStringEntryProto {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `GraphProto`.
#[derive(Clone, PartialEq, Message)]
pub struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    #[prost(string, tag = "10")]
    pub doc_string: String,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
}

/// `NodeProto`: one operator application.
#[derive(Clone, PartialEq, Message)]
pub struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub op_type: String,
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
    #[prost(string, tag = "7")]
    pub domain: String,
}

/// `AttributeProto`, for the scalar and list kinds we use.
#[derive(Clone, PartialEq, Message)]
pub struct AttributeProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(float, tag = "2")]
    pub f: f32,
    #[prost(int64, tag = "3")]
    pub i: i64,
    #[prost(bytes = "vec", tag = "4")]
    pub s: Vec<u8>,
    #[prost(float, repeated, tag = "7")]
    pub floats: Vec<f32>,
    #[prost(int64, repeated, tag = "8")]
    pub ints: Vec<i64>,
    /// `AttributeType`: FLOAT=1, INT=2, STRING=3, FLOATS=6, INTS=7.
    #[prost(int32, tag = "20")]
    pub r#type: i32,
}

impl AttributeProto {
    /// An INT attribute.
    pub fn int(name: &str, value: i64) -> Self {
        Self {
            name: name.into(),
            i: value,
            r#type: 2,
            ..Default::default()
        }
    }
    /// A FLOAT attribute.
    pub fn float(name: &str, value: f32) -> Self {
        Self {
            name: name.into(),
            f: value,
            r#type: 1,
            ..Default::default()
        }
    }
    /// An INTS attribute.
    pub fn ints(name: &str, values: &[i64]) -> Self {
        Self {
            name: name.into(),
            ints: values.to_vec(),
            r#type: 7,
            ..Default::default()
        }
    }
}

/// `TensorProto`, with data in `raw_data` (little-endian), as ONNX recommends.
#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    #[prost(string, tag = "8")]
    pub name: String,
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
}

/// `ValueInfoProto`: a graph input or output.
#[derive(Clone, PartialEq, Message)]
pub struct ValueInfoProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
}

/// `TypeProto`, tensor types only.
#[derive(Clone, PartialEq, Message)]
pub struct TypeProto {
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TensorTypeProto>,
}

/// `TypeProto.Tensor`.
#[derive(Clone, PartialEq, Message)]
pub struct TensorTypeProto {
    #[prost(int32, tag = "1")]
    pub elem_type: i32,
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
}

/// `TensorShapeProto`.
#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dimension>,
}

/// `TensorShapeProto.Dimension`.
#[derive(Clone, PartialEq, Message)]
pub struct Dimension {
    #[prost(oneof = "DimValue", tags = "1, 2")]
    pub value: Option<DimValue>,
}

/// A fixed size or a named symbolic one.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum DimValue {
    /// A fixed size.
    #[prost(int64, tag = "1")]
    Value(i64),
    /// A symbolic size such as `batch`.
    #[prost(string, tag = "2")]
    Param(String),
}

/// A dimension as callers spell it.
#[derive(Clone, Debug)]
pub enum Dim {
    /// The batch dimension, symbolic.
    Batch,
    /// A fixed size.
    Fixed(i64),
}

impl Dim {
    fn proto(&self) -> Dimension {
        Dimension {
            value: Some(match self {
                Dim::Batch => DimValue::Param("batch".into()),
                Dim::Fixed(n) => DimValue::Value(*n),
            }),
        }
    }
}

fn value_info(name: &str, elem_type: i32, dims: &[Dim]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type,
                shape: Some(TensorShapeProto {
                    dim: dims.iter().map(Dim::proto).collect(),
                }),
            }),
        }),
    }
}

/// Builds a graph node by node; `finish` wraps it in a model with metadata.
#[derive(Default)]
pub struct GraphBuilder {
    graph: GraphProto,
}

impl GraphBuilder {
    /// An empty graph called `name`.
    pub fn new(name: &str) -> Self {
        Self {
            graph: GraphProto {
                name: name.into(),
                ..Default::default()
            },
        }
    }

    /// Declares a float graph input.
    pub fn input_f32(&mut self, name: &str, dims: &[Dim]) -> &mut Self {
        self.graph.input.push(value_info(name, FLOAT, dims));
        self
    }

    /// Declares an int64 graph input (embedding indices).
    pub fn input_i64(&mut self, name: &str, dims: &[Dim]) -> &mut Self {
        self.graph.input.push(value_info(name, INT64, dims));
        self
    }

    /// Declares a float graph output.
    pub fn output_f32(&mut self, name: &str, dims: &[Dim]) -> &mut Self {
        self.graph.output.push(value_info(name, FLOAT, dims));
        self
    }

    /// Adds a float constant. `data.len()` must equal the product of `dims`.
    pub fn init_f32(&mut self, name: &str, dims: &[i64], data: &[f32]) -> &mut Self {
        debug_assert_eq!(dims.iter().product::<i64>() as usize, data.len(), "{name}");
        let raw_data = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.graph.initializer.push(TensorProto {
            dims: dims.to_vec(),
            data_type: FLOAT,
            name: name.into(),
            raw_data,
        });
        self
    }

    /// Adds an int64 constant (shapes, axes).
    pub fn init_i64(&mut self, name: &str, dims: &[i64], data: &[i64]) -> &mut Self {
        debug_assert_eq!(dims.iter().product::<i64>() as usize, data.len(), "{name}");
        let raw_data = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.graph.initializer.push(TensorProto {
            dims: dims.to_vec(),
            data_type: INT64,
            name: name.into(),
            raw_data,
        });
        self
    }

    /// Adds an operator of the default domain.
    pub fn node(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        outputs: &[&str],
        attribute: Vec<AttributeProto>,
    ) -> &mut Self {
        let name = format!("{}_{}", op_type.to_lowercase(), self.graph.node.len());
        self.graph.node.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            name,
            op_type: op_type.into(),
            attribute,
            domain: String::new(),
        });
        self
    }

    /// Wraps the graph in a model carrying `metadata` as `metadata_props`.
    pub fn finish(self, metadata: Vec<(String, String)>) -> ModelProto {
        ModelProto {
            ir_version: IR_VERSION,
            producer_name: "taskcast".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            domain: "dev.taskcast".into(),
            model_version: 1,
            doc_string: String::new(),
            graph: Some(self.graph),
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            metadata_props: metadata
                .into_iter()
                .map(|(key, value)| StringStringEntryProto { key, value })
                .collect(),
        }
    }
}

impl ModelProto {
    /// The serialized file.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// Parses a file; fails on bytes that are not a protobuf `ModelProto`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, prost::DecodeError> {
        Self::decode(bytes)
    }

    /// A metadata value by key.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata_props
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.value.as_str())
    }
}
