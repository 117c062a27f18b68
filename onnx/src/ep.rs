//! Execution providers as configuration: which accelerator ONNX Runtime should use for a model,
//! with its options, in order of preference. Parsed from config (TOML/JSON tables or the short
//! string form) and from the CLI (`--ep cuda,openvino:NPU,cpu`). Registration itself lives in the
//! ort backend; this module knows no ort types.
//!
//! Short form, one entry per comma-separated item:
//!
//! | spec | meaning |
//! |---|---|
//! | `cpu` | ONNX Runtime's default CPU provider |
//! | `cuda`, `cuda:1` | CUDA on device 0 / 1 |
//! | `tensorrt`, `tensorrt:fp16` | TensorRT (optionally with fp16 kernels) |
//! | `openvino:CPU`, `openvino:GPU`, `openvino:NPU` | OpenVINO on the given device type |
//! | `qnn:/usr/lib/libQnnHtp.so` | Qualcomm QNN with the given backend library |
//! | `rknpu`, `vsinpu`, `xnnpack`, `acl`, `armnn` | the named provider |
//! | `vitis`, `vitis:/path/vaip_config.json` | AMD Vitis AI |
//! | `cann`, `cann:1` | Huawei Ascend CANN on NPU 0 / 1 |
//!
//! A trailing `!` (`openvino:NPU!`) marks the entry as required: if it cannot be registered,
//! loading fails with the provider's own error instead of falling back to the next entry.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::OnnxError;

/// One execution provider with its options.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ExecutionProvider {
    /// ONNX Runtime's CPU provider (always available; always the implicit last resort).
    Cpu,
    /// NVIDIA CUDA.
    Cuda {
        /// GPU index.
        #[serde(default)]
        device_id: u32,
    },
    /// NVIDIA TensorRT (falls back to CUDA/CPU per node when listed before them).
    #[serde(rename = "tensorrt")]
    TensorRt {
        /// GPU index.
        #[serde(default)]
        device_id: u32,
        /// Allow fp16 kernels.
        #[serde(default)]
        fp16: bool,
        /// Where built engines are cached (strongly recommended: engine builds take minutes).
        #[serde(default)]
        engine_cache_dir: Option<PathBuf>,
    },
    /// Intel OpenVINO (CPU, GPU or NPU).
    #[serde(rename = "openvino")]
    OpenVino {
        /// `CPU`, `GPU`, `NPU`, `GPU.0`, `HETERO:NPU,CPU`...
        #[serde(default = "default_openvino_device")]
        device_type: String,
        /// Where compiled blobs are cached.
        #[serde(default)]
        cache_dir: Option<PathBuf>,
    },
    /// Qualcomm QNN (Hexagon HTP, GPU or CPU backend library).
    Qnn {
        /// Backend library, e.g. `libQnnHtp.so`.
        backend_path: PathBuf,
    },
    /// Rockchip RKNPU.
    Rknpu,
    /// VeriSilicon VSI NPU (NXP i.MX 8M Plus and similar).
    #[serde(rename = "vsinpu")]
    VsiNpu,
    /// XNNPACK (optimised Arm/x86 CPU kernels).
    Xnnpack {
        /// Thread pool size (default: ORT's choice).
        #[serde(default)]
        threads: Option<usize>,
    },
    /// Arm Compute Library.
    Acl {
        /// Allow fast-math convolution kernels.
        #[serde(default)]
        fast_math: bool,
    },
    /// Arm NN.
    #[serde(rename = "armnn")]
    ArmNn,
    /// AMD Vitis AI (Ryzen AI NPU, Versal/Zynq DPU).
    #[serde(rename = "vitis")]
    VitisAi {
        /// `vaip_config.json` of the Vitis AI installation.
        #[serde(default)]
        config_file: Option<PathBuf>,
        /// Where compiled models are cached.
        #[serde(default)]
        cache_dir: Option<PathBuf>,
    },
    /// Huawei Ascend CANN.
    Cann {
        /// NPU index.
        #[serde(default)]
        device_id: u32,
    },
}

fn default_openvino_device() -> String {
    "CPU".to_string()
}

impl ExecutionProvider {
    /// Short, stable name (`cuda`, `openvino`...), as used in config and reports.
    pub fn kind(&self) -> &'static str {
        match self {
            ExecutionProvider::Cpu => "cpu",
            ExecutionProvider::Cuda { .. } => "cuda",
            ExecutionProvider::TensorRt { .. } => "tensorrt",
            ExecutionProvider::OpenVino { .. } => "openvino",
            ExecutionProvider::Qnn { .. } => "qnn",
            ExecutionProvider::Rknpu => "rknpu",
            ExecutionProvider::VsiNpu => "vsinpu",
            ExecutionProvider::Xnnpack { .. } => "xnnpack",
            ExecutionProvider::Acl { .. } => "acl",
            ExecutionProvider::ArmNn => "armnn",
            ExecutionProvider::VitisAi { .. } => "vitis",
            ExecutionProvider::Cann { .. } => "cann",
        }
    }

    /// The name ONNX Runtime uses for this provider (and in its node-placement logs).
    pub fn ort_name(&self) -> &'static str {
        match self {
            ExecutionProvider::Cpu => "CPUExecutionProvider",
            ExecutionProvider::Cuda { .. } => "CUDAExecutionProvider",
            ExecutionProvider::TensorRt { .. } => "TensorrtExecutionProvider",
            ExecutionProvider::OpenVino { .. } => "OpenVINOExecutionProvider",
            ExecutionProvider::Qnn { .. } => "QNNExecutionProvider",
            ExecutionProvider::Rknpu => "RknpuExecutionProvider",
            ExecutionProvider::VsiNpu => "VSINPUExecutionProvider",
            ExecutionProvider::Xnnpack { .. } => "XnnpackExecutionProvider",
            ExecutionProvider::Acl { .. } => "ACLExecutionProvider",
            ExecutionProvider::ArmNn => "ArmNNExecutionProvider",
            ExecutionProvider::VitisAi { .. } => "VitisAIExecutionProvider",
            ExecutionProvider::Cann { .. } => "CANNExecutionProvider",
        }
    }
}

impl fmt::Display for ExecutionProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecutionProvider::Cuda { device_id } if *device_id != 0 => write!(f, "cuda:{device_id}"),
            ExecutionProvider::TensorRt { fp16: true, .. } => f.write_str("tensorrt:fp16"),
            ExecutionProvider::OpenVino { device_type, .. } => write!(f, "openvino:{device_type}"),
            ExecutionProvider::Qnn { backend_path } => write!(f, "qnn:{}", backend_path.display()),
            ExecutionProvider::Cann { device_id } if *device_id != 0 => write!(f, "cann:{device_id}"),
            ExecutionProvider::VitisAi { config_file: Some(c), .. } => write!(f, "vitis:{}", c.display()),
            other => f.write_str(other.kind()),
        }
    }
}

/// An entry of a model's preference list: a provider, and whether loading must fail if it
/// cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EpConfig {
    /// The provider and its options.
    #[serde(flatten)]
    pub provider: ExecutionProvider,
    /// Fail loading (with the provider's own error) instead of falling back.
    pub require: bool,
}

impl EpConfig {
    /// An optional (fall-back-able) entry.
    pub fn new(provider: ExecutionProvider) -> Self {
        EpConfig { provider, require: false }
    }
}

impl fmt::Display for EpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.provider, if self.require { "!" } else { "" })
    }
}

impl FromStr for EpConfig {
    type Err = OnnxError;

    fn from_str(spec: &str) -> Result<Self, OnnxError> {
        let bad = |reason: &str| OnnxError::BadProviderSpec { spec: spec.to_string(), reason: reason.to_string() };
        let trimmed = spec.trim();
        let (body, require) = match trimmed.strip_suffix('!') {
            Some(b) => (b, true),
            None => (trimmed, false),
        };
        let (name, arg) = match body.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (body, None),
        };
        let no_arg = |p: ExecutionProvider| match arg {
            None => Ok(p),
            Some(_) => Err(bad("this provider takes no ':' option")),
        };
        let provider = match name.to_ascii_lowercase().as_str() {
            "cpu" => no_arg(ExecutionProvider::Cpu)?,
            "cuda" => ExecutionProvider::Cuda {
                device_id: match arg {
                    Some(a) => a.parse().map_err(|_| bad("device id must be a number, e.g. cuda:0"))?,
                    None => 0,
                },
            },
            "tensorrt" | "trt" => ExecutionProvider::TensorRt {
                device_id: 0,
                fp16: match arg {
                    Some("fp16") => true,
                    Some("fp32") | None => false,
                    Some(_) => return Err(bad("option must be fp16 or fp32")),
                },
                engine_cache_dir: None,
            },
            "openvino" => ExecutionProvider::OpenVino {
                device_type: match arg {
                    Some(a) if !a.is_empty() => a.to_string(),
                    Some(_) => return Err(bad("device type is empty")),
                    None => default_openvino_device(),
                },
                cache_dir: None,
            },
            "qnn" => ExecutionProvider::Qnn {
                backend_path: match arg {
                    Some(a) if !a.is_empty() => PathBuf::from(a),
                    _ => PathBuf::from("libQnnHtp.so"),
                },
            },
            "rknpu" => no_arg(ExecutionProvider::Rknpu)?,
            "vsinpu" => no_arg(ExecutionProvider::VsiNpu)?,
            "xnnpack" => ExecutionProvider::Xnnpack {
                threads: match arg {
                    Some(a) => Some(a.parse().map_err(|_| bad("thread count must be a number"))?),
                    None => None,
                },
            },
            "acl" => no_arg(ExecutionProvider::Acl { fast_math: false })?,
            "armnn" => no_arg(ExecutionProvider::ArmNn)?,
            "vitis" | "vitisai" => ExecutionProvider::VitisAi {
                config_file: arg.filter(|a| !a.is_empty()).map(PathBuf::from),
                cache_dir: None,
            },
            "cann" => ExecutionProvider::Cann {
                device_id: match arg {
                    Some(a) => a.parse().map_err(|_| bad("device id must be a number, e.g. cann:0"))?,
                    None => 0,
                },
            },
            "" => return Err(bad("empty provider name")),
            _ => {
                return Err(bad(
                    "unknown provider (known: cpu, cuda, tensorrt, openvino, qnn, rknpu, vsinpu, xnnpack, acl, armnn, vitis, cann)",
                ));
            }
        };
        Ok(EpConfig { provider, require })
    }
}

/// Parses a comma-separated list such as `cuda,openvino:NPU,cpu`.
pub fn parse_ep_list(spec: &str) -> Result<Vec<EpConfig>, OnnxError> {
    spec.split(',').filter(|s| !s.trim().is_empty()).map(EpConfig::from_str).collect()
}

impl<'de> Deserialize<'de> for EpConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Table {
            #[serde(flatten)]
            provider: ExecutionProvider,
            #[serde(default)]
            require: bool,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Short(String),
            Table(Table),
        }
        match Either::deserialize(deserializer)? {
            Either::Short(s) => s.parse().map_err(serde::de::Error::custom),
            Either::Table(t) => Ok(EpConfig { provider: t.provider, require: t.require }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_forms_parse() {
        let list =
            parse_ep_list("cuda:1, tensorrt:fp16,openvino:NPU!,qnn:/opt/libQnnHtp.so,cpu,vitis:/etc/vaip.json,cann:1")
                .unwrap();
        assert_eq!(list[0].provider, ExecutionProvider::Cuda { device_id: 1 });
        assert!(matches!(list[1].provider, ExecutionProvider::TensorRt { fp16: true, .. }));
        assert_eq!(
            list[2],
            EpConfig {
                provider: ExecutionProvider::OpenVino { device_type: "NPU".into(), cache_dir: None },
                require: true
            }
        );
        assert_eq!(list[3].provider.to_string(), "qnn:/opt/libQnnHtp.so");
        assert_eq!(list[4].provider, ExecutionProvider::Cpu);
        // Display round-trips through the parser.
        for ep in &list {
            assert_eq!(&ep.to_string().parse::<EpConfig>().unwrap(), ep);
        }
    }

    #[test]
    fn bad_specs_are_named() {
        for spec in ["gpu", "cuda:x", "cpu:1", "tensorrt:int4", ""] {
            let err = spec.parse::<EpConfig>().unwrap_err().to_string();
            assert!(err.contains("bad execution provider spec"), "{spec}: {err}");
        }
    }

    #[test]
    fn table_and_string_forms_deserialize() {
        let json = r#"["cuda", {"kind": "tensorrt", "fp16": true, "engine_cache_dir": "/var/cache/trt", "require": true},
                      {"kind": "openvino", "device_type": "GPU"}, "cpu"]"#;
        let list: Vec<EpConfig> = serde_json::from_str(json).unwrap();
        assert_eq!(list.len(), 4);
        assert!(list[1].require);
        assert_eq!(
            list[1].provider,
            ExecutionProvider::TensorRt { device_id: 0, fp16: true, engine_cache_dir: Some("/var/cache/trt".into()) }
        );
        assert_eq!(list[2].to_string(), "openvino:GPU");
        assert!(serde_json::from_str::<Vec<EpConfig>>(r#"[{"kind": "cuda", "devise_id": 1}]"#).is_err());
    }
}
