//! `seg-host info`: what libtorch this binary runs on and what it can use.

use std::fmt;

/// The libtorch version found at build time (torch-sys's folder), the devices, threads.
pub struct SystemInfo {
    pub libtorch: &'static str,
    pub cuda: bool,
    pub cudnn: bool,
    pub gpus: Vec<String>,
    pub threads: i32,
}

impl SystemInfo {
    pub fn gather() -> Self {
        let cuda = tch::Cuda::is_available();
        let count = tch::Cuda::device_count();
        Self {
            libtorch: env!("SEG_HOST_LIBTORCH_VERSION"),
            cuda,
            cudnn: tch::Cuda::cudnn_is_available(),
            gpus: if count > 0 {
                gpu_names(count)
            } else {
                Vec::new()
            },
            threads: tch::get_num_threads(),
        }
    }
}

/// GPU names from nvidia-smi (libtorch's C API, which tch wraps, does not give them).
fn gpu_names(count: i64) -> Vec<String> {
    let listed = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name,memory.total", "--format=csv,noheader"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    (0..count as usize)
        .map(|i| {
            listed
                .get(i)
                .cloned()
                .unwrap_or_else(|| "(name unknown: nvidia-smi not found)".into())
        })
        .collect()
}

impl fmt::Display for SystemInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "libtorch: {}", self.libtorch)?;
        writeln!(f, "cuda available: {}", self.cuda)?;
        writeln!(f, "cudnn available: {}", self.cudnn)?;
        writeln!(f, "gpus: {}", self.gpus.len())?;
        for (i, name) in self.gpus.iter().enumerate() {
            writeln!(f, "  cuda:{i}: {name}")?;
        }
        writeln!(f, "threads: {}", self.threads)
    }
}
