//! Where tch runs: `auto`, `cpu`, `cuda` or `cuda:N`, checked against what libtorch sees.

use anyhow::{bail, Result};

/// Pick the torch device from `auto` (CUDA when available), `cpu`, `cuda` or `cuda:N`.
pub fn parse(name: &str) -> Result<tch::Device> {
    Ok(match name {
        "auto" => tch::Device::cuda_if_available(),
        "cpu" => tch::Device::Cpu,
        "cuda" | "gpu" => require_cuda(0)?,
        other => match other.strip_prefix("cuda:").map(str::parse) {
            Some(Ok(n)) => require_cuda(n)?,
            _ => bail!("device '{other}': expected auto, cpu, cuda or cuda:N"),
        },
    })
}

fn require_cuda(n: usize) -> Result<tch::Device> {
    let count = tch::Cuda::device_count() as usize;
    if n >= count {
        bail!("CUDA device {n} asked for, but libtorch sees {count} CUDA device(s) (run `seg-host info`)");
    }
    Ok(tch::Device::Cuda(n))
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_map_to_devices_and_typos_are_refused() {
        assert_eq!(super::parse("cpu").unwrap(), tch::Device::Cpu);
        let msg = super::parse("cdua").unwrap_err().to_string();
        assert!(msg.contains("cdua") && msg.contains("cuda:N"), "{msg}");
        assert!(super::parse("cuda:x").is_err());
        if tch::Cuda::device_count() == 0 {
            let msg = super::parse("cuda:0").unwrap_err().to_string();
            assert!(msg.contains("0 CUDA device"), "{msg}");
            assert_eq!(super::parse("auto").unwrap(), tch::Device::Cpu);
        }
    }
}
