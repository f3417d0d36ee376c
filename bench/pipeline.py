#!/usr/bin/env python3
"""The live pipeline measured from outside: seg-cam on test:// with a viewer on the
MJPEG stream, its --stats lines and its resident memory (sampled from /proc).

    bench/pipeline.py SEG_CAM MODEL [--seconds 60] [--width 640] [--height 480]
                      [--threads 0] [--rate 200] [--out FILE.json]

Reports whole-pipeline frames/s against 1 / (median inference time) (the pipeline
can go no faster than inference, so 1.0 is the ceiling), overlay and JPEG time per
frame, and resident memory over the run. Standard library only.
"""
import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def thread_cpu(pid):
    """CPU seconds (user + system) used so far by the threads of `pid`, by thread name."""
    tick = os.sysconf("SC_CLK_TCK")
    used = {}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return used
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # a thread that ended
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        used[name] = used.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return used


def viewer(port, stop):
    """Read the MJPEG stream like a browser would, and throw it away."""
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(f"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
                while not stop.is_set() and s.recv(1 << 16):
                    pass
        except OSError:
            time.sleep(0.2)


def spread(values):
    values = sorted(values)
    if not values:
        return None
    q = lambda p: values[min(len(values) - 1, int(p * len(values)))]
    return {"median": statistics.median(values), "p10": q(0.1), "p90": q(0.9), "n": len(values)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("seg_cam")
    ap.add_argument("model")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--rate", type=float, default=200,
                    help="the test scene's frames/s: above what inference takes, so that the source never sets the pace")
    ap.add_argument("--engine", default="auto")
    ap.add_argument("--bench-ms", type=float, help="seg-cam bench's median inference ms, to compare with")
    ap.add_argument("--warmup", type=float, default=5, help="seconds left out of the figures")
    ap.add_argument("--out")
    args = ap.parse_args()

    port = free_port()
    cmd = [args.seg_cam, "test://", "--model", args.model, "--width", str(args.width),
           "--height", str(args.height), "--rate", str(args.rate), "--threads", str(args.threads),
           "--engine", args.engine,
           "--http", f"127.0.0.1:{port}", "--stats"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines, log = [], []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    # The log (stderr) says which JPEG encoder the output stage uses.
    log_reader = threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True)
    log_reader.start()
    stop = threading.Event()
    threading.Thread(target=viewer, args=(port, stop), daemon=True).start()

    start = time.monotonic()
    memory = []  # (seconds, MiB)
    next_sample = 0.0
    cpu_from = None  # (seconds, CPU by thread) when the warm-up ended
    while (elapsed := time.monotonic() - start) < args.seconds:
        if proc.poll() is not None:
            sys.exit(f"seg-cam stopped early with status {proc.returncode}: {' '.join(cmd)}")
        if cpu_from is None and elapsed >= args.warmup:
            cpu_from = (elapsed, thread_cpu(proc.pid))
        if elapsed >= next_sample:
            memory.append((round(elapsed, 1), rss_mib(proc.pid)))
            next_sample += max(1.0, args.seconds / 120)
        time.sleep(0.2)
    cpu_to = (time.monotonic() - start, thread_cpu(proc.pid))
    proc.send_signal(2)  # SIGINT: seg-cam stops cleanly and flushes its stats
    proc.wait(timeout=30)
    stop.set()
    reader.join(timeout=5)
    log_reader.join(timeout=5)
    jpeg_encoder = next((l.split("JPEG: ", 1)[1].strip() for l in log if "JPEG: " in l), None)

    frames = [json.loads(l) for l in lines if l.startswith("{")]
    frames = [f for f in frames if f.get("event") == "frame" and f["time_ms"] >= args.warmup * 1000]
    if len(frames) < 2:
        sys.exit(f"seg-cam gave {len(frames)} frames after the warm-up; run longer")
    span_s = (frames[-1]["time_ms"] - frames[0]["time_ms"]) / 1000
    fps = (len(frames) - 1) / span_s
    inference = spread([f["inference_ms"] for f in frames])
    ceiling = 1000 / inference["median"]
    after_warmup = [m for t, m in memory if t >= args.warmup and m is not None]
    result = {
        "model": os.path.basename(args.model),
        "input": f"test:// {args.width}x{args.height}",
        "threads": args.threads,
        "seconds": args.seconds,
        "frames": len(frames),
        "pipeline_fps": fps,
        "inference_ms": inference,
        "fps_over_inference_ceiling": fps / ceiling,
        "engine": args.engine,
        # The inference stage (fit to the input, normalise, run, argmax) in the pipeline
        # against the bare model run of `seg-cam bench`, same threads.
        "bench_ms": args.bench_ms,
        "inference_over_bench": inference["median"] / args.bench_ms if args.bench_ms else None,
        "fps_over_bench_ceiling": fps * args.bench_ms / 1000 if args.bench_ms else None,
        "preprocess_ms": spread([f["preprocess_ms"] for f in frames if "preprocess_ms" in f]),
        "overlay_ms": spread([f["overlay_ms"] for f in frames]),
        "jpeg_ms": spread([f["jpeg_ms"] for f in frames if f.get("jpeg_ms") is not None]),
        "jpeg_encoder": jpeg_encoder,
        "latency_ms": spread([f["latency_ms"] for f in frames]),
        "dropped": frames[-1]["dropped"],
        "rss_mib": {"first": after_warmup[0], "last": after_warmup[-1], "max": max(after_warmup),
                    "samples": memory},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    # CPU per frame of each of seg-cam's threads over the same span (from /proc): on a
    # machine whose cores inference keeps busy, the stages' wall times above include
    # waiting for a core, CPU time is their cost. (A thread that ended inside the span,
    # an HTTP client's, loses its CPU: the figures are a floor for those.)
    window = cpu_to[0] - cpu_from[0] if cpu_from and cpu_from[1] and cpu_to[1] else 0
    cpu_frames = fps * window
    result["cpu_ms_per_frame"] = {
        name: max(0.0, 1000 * (used - cpu_from[1].get(name, 0.0)) / cpu_frames)
        for name, used in sorted(cpu_to[1].items())} if cpu_frames else {}
    # Everything per frame that is not running the model: fitting the frame to the
    # input (its wall time, on the inference thread), and the CPU of the threads that
    # do nothing else — capture (here the test scene; a camera's conversion), output
    # (overlay, HUD, JPEG) and the HTTP server. Against two things: the bare model's
    # time (or, without one, the inference stage's), the measure, and the CPU
    # that inference itself takes per frame (every other thread, less the fit), which
    # with several inference threads is the fairer comparison of work with work.
    p, o, j = result["preprocess_ms"], result["overlay_ms"], result["jpeg_ms"]
    cpu = result["cpu_ms_per_frame"]
    fit = p["median"] if p else 0.0
    other = {k: v for k, v in cpu.items() if k in ("capture", "output") or k.startswith("segcam-http")}
    result["non_inference_ms"] = fit + sum(other.values()) if cpu else None
    result["inference_cpu_ms"] = sum(cpu.values()) - sum(other.values()) - fit if cpu else None
    result["non_inference_against"] = "bare model" if args.bench_ms else "inference stage"
    result["non_inference_share"] = (result["non_inference_ms"] / (args.bench_ms or inference["median"])
                                     if cpu else None)
    result["non_inference_cpu_share"] = (result["non_inference_ms"] / result["inference_cpu_ms"]
                                         if cpu and result["inference_cpu_ms"] > 0 else None)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    r = result["rss_mib"]
    print(f"pipeline on {result['input']}, {result['model']}, threads {args.threads}, {args.seconds:.0f} s:")
    print(f"  frames/s {fps:.2f} vs 1/inference {ceiling:.2f} (median inference {inference['median']:.1f} ms)"
          f" → ratio {result['fps_over_inference_ceiling']:.2f}")
    if args.bench_ms:
        print(f"  inference stage {inference['median']:.1f} ms vs seg-cam bench {args.bench_ms:.1f} ms"
              f" ({result['inference_over_bench']:.2f}×); frames/s × bench ms = {result['fps_over_bench_ceiling']:.2f}")
    print(f"  overlay {o['median']:.1f} ms, "
          + (f"JPEG {j['median']:.1f} ms" if j else "no JPEG encoded")
          + " per frame (wall, medians)"
          + (f"; JPEG by {result['jpeg_encoder']}" if result["jpeg_encoder"] else ""))
    if cpu:
        print("  CPU ms per frame by thread: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()))
        print(f"  not inference: fit {fit:.1f} ms + capture, output and HTTP threads' CPU"
              f" = {result['non_inference_ms']:.1f} ms per frame: {100 * result['non_inference_share']:.0f} %"
              f" of the {result['non_inference_against']}'s time, "
              + (f"{100 * result['non_inference_cpu_share']:.0f} %" if result["non_inference_cpu_share"] else "?")
              + f" of inference's CPU ({result['inference_cpu_ms']:.1f} ms)")
    else:
        print("  no CPU figures: the threads' /proc files could not be read, or the run was shorter than the warm-up")
    print(f"  resident memory after warm-up: first {r['first']:.1f} MiB, last {r['last']:.1f} MiB,"
          f" max {r['max']:.1f} MiB")


if __name__ == "__main__":
    main()
