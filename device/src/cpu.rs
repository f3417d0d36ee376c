//! What the CPU offers the engines: its name and the vector features their kernels use
//! (NEON, SDOT, fp16 on ARM; AVX2, FMA, AVX-512, VNNI on x86).

/// The CPU's model name (from /proc/cpuinfo where there is one) and architecture.
pub fn name() -> String {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = text.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        matches!(key.trim(), "model name" | "Model" | "Hardware").then(|| value.trim().to_string())
    });
    let arch = std::env::consts::ARCH;
    match model {
        Some(m) if !m.is_empty() => format!("{m} ({arch})"),
        _ => arch.to_string(),
    }
}

/// The features relevant to inference kernels that this CPU has, as the kernels name them.
pub fn features() -> Vec<&'static str> {
    let mut out = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! probe {
            ($($f:tt => $name:expr),*) => {
                $(if std::arch::is_x86_feature_detected!($f) { out.push($name); })*
            };
        }
        probe!("avx2" => "avx2", "fma" => "fma", "avx512f" => "avx512f",
               "avx512vnni" => "avx512-vnni", "avxvnni" => "avx-vnni", "f16c" => "f16c");
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! probe {
            ($($f:tt => $name:expr),*) => {
                $(if std::arch::is_aarch64_feature_detected!($f) { out.push($name); })*
            };
        }
        probe!("neon" => "neon", "dotprod" => "sdot", "fp16" => "fp16", "i8mm" => "i8mm",
               "sve2" => "sve2");
    }
    out
}

/// Whether int8 dot-product instructions are there (VNNI on x86, SDOT on ARM): without
/// them int8 matrix kernels widen and multiply, and rarely beat f32.
pub fn has_int8_dot() -> bool {
    features()
        .iter()
        .any(|f| matches!(*f, "avx512-vnni" | "avx-vnni" | "sdot"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_agree_with_the_kernels_view_in_proc_cpuinfo() {
        let f = features();
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let flags: Vec<&str> = info
            .lines()
            .find(|l| l.starts_with("flags") || l.starts_with("Features"))
            .and_then(|l| l.split_once(':'))
            .map_or(vec![], |(_, v)| v.split_whitespace().collect());
        if flags.is_empty() {
            return; // not Linux: nothing to compare with
        }
        #[cfg(target_arch = "x86_64")]
        let pairs = [
            ("avx2", "avx2"),
            ("fma", "fma"),
            ("avx512f", "avx512f"),
            ("avx512_vnni", "avx512-vnni"),
        ];
        #[cfg(target_arch = "aarch64")]
        let pairs = [
            ("asimd", "neon"),
            ("asimddp", "sdot"),
            ("fphp", "fp16"),
            ("i8mm", "i8mm"),
        ];
        for (kernel_flag, ours) in pairs {
            assert_eq!(
                flags.contains(&kernel_flag),
                f.contains(&ours),
                "/proc/cpuinfo {kernel_flag} vs {ours} in {f:?}"
            );
        }
        assert_eq!(
            has_int8_dot(),
            f.iter().any(|x| x.contains("vnni") || *x == "sdot")
        );
        assert!(name().contains(std::env::consts::ARCH));
    }
}
