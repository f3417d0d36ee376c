//! Time per node of a model in tract: `profile_model MODEL H W [--kernels]` (development aid).
use std::collections::HashMap;
use std::time::Instant;

use tract_onnx::prelude::*;

fn main() -> TractResult<()> {
    let args: Vec<String> = std::env::args().collect();
    let (h, w): (usize, usize) = (args[2].parse()?, args[3].parse()?);
    let kernels = args.get(4).is_some_and(|a| a == "--kernels");
    let plan = tract_onnx::onnx()
        .model_for_path(&args[1])?
        .with_input_fact(0, f32::fact([1, 3, h, w]).into())?
        .into_optimized()?
        .into_runnable()?;
    let mut state = plan.spawn()?;
    let input: TValue = Tensor::zero::<f32>(&[1, 3, h, w])?.into();
    let mut times: HashMap<String, (f64, String)> = HashMap::new();
    for _ in 0..2 {
        times.clear();
        state.run_plan_with_eval(tvec![input.clone()], |ctx, st, node, inputs| {
            let t = Instant::now();
            let r = tract_onnx::tract_core::plan::eval(ctx, st, node, inputs);
            let e = times.entry(node.name.clone()).or_insert_with(|| {
                // With --kernels, the op's details: which matmul kernel tract chose.
                let op = if kernels {
                    format!("{:?}", node.op).chars().take(600).collect()
                } else {
                    node.op.to_string()
                };
                (0.0, op)
            });
            e.0 += t.elapsed().as_secs_f64() * 1e3;
            r
        })?;
    }
    let mut v: Vec<_> = times.into_iter().collect();
    v.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    let total: f64 = v.iter().map(|x| x.1 .0).sum();
    println!("total {total:.1} ms");
    for (name, (ms, op)) in v.iter().take(25) {
        println!("{ms:8.2} ms  {name}  {op}");
    }
    Ok(())
}
