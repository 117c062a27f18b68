//! Registration of execution providers with an ORT session builder: config enum → ort's
//! provider types, availability checks against the loaded runtime, and the parsing of ORT's
//! node-placement log lines into per-provider node counts.

use std::collections::BTreeMap;

use ort::ep::ExecutionProviderDispatch;
use ort::session::builder::SessionBuilder;

use crate::ep::ExecutionProvider;

/// Providers compiled into the loaded ONNX Runtime (`CPUExecutionProvider`, ...).
#[allow(unsafe_code)]
pub fn available() -> Result<Vec<String>, String> {
    use std::ffi::{CStr, c_char, c_int};
    let api = ort::api();
    let mut list: *mut *mut c_char = std::ptr::null_mut();
    let mut len: c_int = 0;
    // SAFETY: plain C API call with valid out-pointers; on success ORT owns `list` until
    // ReleaseAvailableProviders, which we call after copying the strings out. A non-null status
    // is read and released.
    unsafe {
        let status = (api.GetAvailableProviders)(&mut list, &mut len);
        if !status.0.is_null() {
            let msg = CStr::from_ptr((api.GetErrorMessage)(status.0)).to_string_lossy().into_owned();
            (api.ReleaseStatus)(status.0);
            return Err(msg);
        }
        let mut names = Vec::with_capacity(len.max(0) as usize);
        for i in 0..len.max(0) as usize {
            let p = *list.add(i);
            if !p.is_null() {
                names.push(CStr::from_ptr(p).to_string_lossy().into_owned());
            }
        }
        let status = (api.ReleaseAvailableProviders)(list, len);
        if !status.0.is_null() {
            (api.ReleaseStatus)(status.0);
        }
        Ok(names)
    }
}

/// Registers `ep` with `builder`. Errors carry ORT's own message.
pub fn register(ep: &ExecutionProvider, builder: &mut SessionBuilder, available: &[String]) -> Result<(), String> {
    if !available.iter().any(|a| a == ep.ort_name()) {
        return Err(format!("{} is not in this ONNX Runtime build (it has: {})", ep.ort_name(), available.join(", ")));
    }
    let dispatch = dispatch(ep)?;
    dispatch.register(builder).map_err(|e| e.to_string())
}

#[allow(unreachable_code, unused_variables, deprecated)]
fn dispatch(ep: &ExecutionProvider) -> Result<ExecutionProviderDispatch, String> {
    let not_built = |feature: &str| -> Result<ExecutionProviderDispatch, String> {
        Err(format!(
            "support for {} is not compiled into this edgeinfer build (cargo feature `{feature}`)",
            ep.ort_name()
        ))
    };
    Ok(match ep {
        ExecutionProvider::Cpu => ort::ep::CPU::default().build(),
        ExecutionProvider::Cuda { device_id } => {
            #[cfg(feature = "ep-cuda")]
            {
                ort::ep::CUDA::default().with_device_id(*device_id as i32).build()
            }
            #[cfg(not(feature = "ep-cuda"))]
            return not_built("ep-cuda");
        }
        ExecutionProvider::TensorRt { device_id, fp16, engine_cache_dir } => {
            #[cfg(feature = "ep-tensorrt")]
            {
                let mut trt = ort::ep::TensorRT::default().with_device_id(*device_id as i32).with_fp16(*fp16);
                if let Some(dir) = engine_cache_dir {
                    trt = trt
                        .with_engine_cache(true)
                        .with_engine_cache_path(dir.display())
                        .with_timing_cache(true)
                        .with_timing_cache_path(dir.display());
                }
                trt.build()
            }
            #[cfg(not(feature = "ep-tensorrt"))]
            return not_built("ep-tensorrt");
        }
        ExecutionProvider::OpenVino { device_type, cache_dir } => {
            #[cfg(feature = "ep-openvino")]
            {
                let mut ov = ort::ep::OpenVINO::default().with_device_type(device_type);
                if let Some(dir) = cache_dir {
                    ov = ov.with_cache_dir(dir.display());
                }
                ov.build()
            }
            #[cfg(not(feature = "ep-openvino"))]
            return not_built("ep-openvino");
        }
        ExecutionProvider::Qnn { backend_path } => {
            #[cfg(feature = "ep-qnn")]
            {
                ort::ep::QNN::default().with_backend_path(backend_path.display()).build()
            }
            #[cfg(not(feature = "ep-qnn"))]
            return not_built("ep-qnn");
        }
        ExecutionProvider::Rknpu => {
            #[cfg(feature = "ep-rknpu")]
            {
                ort::ep::RKNPU::default().build()
            }
            #[cfg(not(feature = "ep-rknpu"))]
            return not_built("ep-rknpu");
        }
        ExecutionProvider::VsiNpu => {
            #[cfg(feature = "ep-vsinpu")]
            {
                ort::ep::VSINPU.build()
            }
            #[cfg(not(feature = "ep-vsinpu"))]
            return not_built("ep-vsinpu");
        }
        ExecutionProvider::Xnnpack { threads } => {
            #[cfg(feature = "ep-xnnpack")]
            {
                let mut x = ort::ep::XNNPACK::default();
                if let Some(n) = threads.and_then(std::num::NonZeroUsize::new) {
                    x = x.with_intra_op_num_threads(n);
                }
                x.build()
            }
            #[cfg(not(feature = "ep-xnnpack"))]
            return not_built("ep-xnnpack");
        }
        ExecutionProvider::Acl { fast_math } => {
            #[cfg(feature = "ep-acl")]
            {
                ort::ep::ACL::default().with_fast_math(*fast_math).build()
            }
            #[cfg(not(feature = "ep-acl"))]
            return not_built("ep-acl");
        }
        ExecutionProvider::ArmNn => {
            #[cfg(feature = "ep-armnn")]
            {
                ort::ep::ArmNN::default().build()
            }
            #[cfg(not(feature = "ep-armnn"))]
            return not_built("ep-armnn");
        }
        ExecutionProvider::VitisAi { config_file, cache_dir } => {
            // ort exposes Vitis AI from API level 18 on; the API-17 (ort-legacy) build lacks it.
            #[cfg(all(feature = "ep-vitis", feature = "ort-api-20"))]
            {
                let mut v = ort::ep::Vitis::default();
                if let Some(c) = config_file {
                    v = v.with_config_file(c.display());
                }
                if let Some(d) = cache_dir {
                    v = v.with_cache_dir(d.display());
                }
                v.build()
            }
            #[cfg(not(all(feature = "ep-vitis", feature = "ort-api-20")))]
            return not_built("ep-vitis (with ort-api-20)");
        }
        ExecutionProvider::Cann { device_id } => {
            #[cfg(feature = "ep-cann")]
            {
                ort::ep::CANN::default().with_device_id(*device_id as i32).build()
            }
            #[cfg(not(feature = "ep-cann"))]
            return not_built("ep-cann");
        }
    }
    .error_on_failure())
}

/// Parses ORT's verbose "Node placements" log lines into node counts per provider:
/// ` All nodes placed on [CPUExecutionProvider]. Number of nodes: 12` or
/// ` Node(s) placed on [OpenVINOExecutionProvider]. Number of nodes: 1`.
pub fn parse_placement<'a>(lines: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, usize> {
    let mut placement = BTreeMap::new();
    for line in lines {
        let Some(start) = line.find("placed on [") else { continue };
        let rest = &line[start + "placed on [".len()..];
        let Some(end) = rest.find(']') else { continue };
        let provider = &rest[..end];
        let count = rest
            .find("Number of nodes: ")
            .and_then(|i| rest[i + "Number of nodes: ".len()..].split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        *placement.entry(provider.to_string()).or_insert(0) += count;
    }
    placement
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_lines_parse() {
        let lines = [
            "Node placements",
            " Node(s) placed on [OpenVINOExecutionProvider]. Number of nodes: 1",
            "  OpenVINO-EP-subgraph_1 (OpenVINO-EP-subgraph_1)",
            " Node(s) placed on [CPUExecutionProvider]. Number of nodes: 3",
        ];
        let p = parse_placement(lines);
        assert_eq!(p.get("OpenVINOExecutionProvider"), Some(&1));
        assert_eq!(p.get("CPUExecutionProvider"), Some(&3));
        let all = parse_placement([" All nodes placed on [CPUExecutionProvider]. Number of nodes: 12"]);
        assert_eq!(all.get("CPUExecutionProvider"), Some(&12));
    }
}
