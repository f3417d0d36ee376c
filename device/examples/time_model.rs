//! Median time of the board's engine on a model: `time_model MODEL [THREADS] [RUNS] [--json]`
//! (`--json`: every run's milliseconds, as `just bench` reads them).
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().collect();
    let json = args.iter().any(|a| a == "--json");
    args.retain(|a| a != "--json");
    let path = std::path::Path::new(
        args.get(1)
            .ok_or("usage: time_model MODEL [THREADS] [RUNS]")?,
    );
    let threads = args.get(2).map_or(Ok(1), |s| s.parse())?;
    let runs: usize = args.get(3).map_or(Ok(5), |s| s.parse())?;
    let engine = segcam::Engine::load(path, threads)?;
    let (w, h) = engine.input_size();
    let chw = vec![0.1f32; 3 * (w * h) as usize];
    engine.run(&chw)?;
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            engine.run(&chw).map(|_| t.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<Result<_, _>>()?;
    if json {
        let list: Vec<String> = times.iter().map(|t| format!("{t:.3}")).collect();
        println!("{{\"runs_ms\": [{}]}}", list.join(", "));
        return Ok(());
    }
    times.sort_by(f64::total_cmp);
    println!("{} {:.1} ms", path.display(), times[times.len() / 2]);
    Ok(())
}
