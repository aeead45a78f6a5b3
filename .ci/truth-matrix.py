#!/usr/bin/env python3
"""`tcpbye check` beside a ground truth taken here: a tshark capture on lo and
strace -f -ttt -T of each program. One row per (program, mode): tcpbye's time and
its resolution, the truth, the error; then the largest error per column.
Run as root after `cargo build --release`: python3 .ci/truth-matrix.py
(TCPBYE=path overrides the binary). Needs redis-server, nginx, socat, tshark, strace."""
import json, os, signal, socket, subprocess, sys, tempfile, time

T = os.environ.get("TCPBYE", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "tcpbye"))
DIR = tempfile.mkdtemp(prefix="truth-")

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def wait_port(port, t=10):
    end = time.time() + t
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close(); return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing on {port}")

SLOW = r'''
import socket, sys, threading, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16)
def serve(c):
    try:
        while True:
            d = c.recv(4096)
            if not d: break
            c.sendall(d)
    except OSError:
        pass
    time.sleep(0.3)
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
'''

def nginx_conf(port):
    d = os.path.join(DIR, f"nginx-{port}"); os.makedirs(d, exist_ok=True)
    conf = os.path.join(d, "nginx.conf")
    open(conf, "w").write(f"""
daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};
  keepalive_timeout 2s; server {{ listen 127.0.0.1:{port} deferred; location / {{ return 200 "ok\\n"; }} }} }}
""")
    return ["nginx", "-c", conf, "-p", d]

SETUPS = [
    ("nginx deferred", lambda p: nginx_conf(p), ["--modes", "fin,half,rst,drop,reboot,hang", "--request", "GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n", "--wait", "4s"]),
    ("redis tcp-keepalive 2", lambda p: ["redis-server", "--port", str(p), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--tcp-keepalive", "2"], ["--modes", "fin,rst,drop,reboot", "--request", "PING\\r\\n", "--wait", "9s"]),
    ("redis timeout 1", lambda p: ["redis-server", "--port", str(p), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--timeout", "1", "--tcp-keepalive", "0"], ["--modes", "drop,reboot,hang", "--request", "PING\\r\\n", "--wait", "4s"]),
    ("python slow closer", lambda p: ["python3", "-c", SLOW, str(p)], ["--modes", "fin,half,rst", "--request", "hi\\n", "--wait", "2s"]),
    ("socat fork", lambda p: ["socat", f"TCP-LISTEN:{p},bind=127.0.0.1,reuseaddr,fork", "PIPE"], ["--modes", "fin,half,rst", "--request", "hi\\n", "--wait", "1s"]),
]

def capture(port):
    f = os.path.join(DIR, f"{port}.pcap")
    p = subprocess.Popen(["tshark", "-i", "lo", "-f", f"tcp port {port}", "-w", f], stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
        if "Capturing on" in line: break
    return p, f

def segments(f):
    out = subprocess.run(["tshark", "-r", f, "-T", "fields", "-e", "frame.time_epoch", "-e", "tcp.srcport", "-e", "tcp.dstport", "-e", "tcp.flags.syn", "-e", "tcp.flags.fin", "-e", "tcp.flags.reset"], capture_output=True, text=True).stdout
    segs = []
    for l in out.splitlines():
        f_ = l.split("\t")
        fl = lambda x: x in ("1", "True", "true")
        segs.append(dict(t=float(f_[0]), src=int(f_[1]), dst=int(f_[2]), syn=fl(f_[3]), fin=fl(f_[4]), rst=fl(f_[5])))
    return segs

def strace_events(path):
    """(tid, return time, call text with its fd) from strace -f -ttt -T: a blocking
    call's moment is its return (entry + the time spent in it); a call split by
    another thread's line (`<unfinished ...>` / `<... resumed>`) is put together."""
    import re
    ev = []; pending = {}
    for l in open(path):
        parts = l.rstrip("\n").split(None, 2)
        if len(parts) < 3: continue
        try: tid, t = int(parts[0]), float(parts[1])
        except ValueError: continue
        what = parts[2]
        if what.endswith("<unfinished ...>"):
            pending[tid] = (t, what[: -len("<unfinished ...>")].rstrip()); continue
        m = re.match(r"<\.\.\. (\w+) resumed>(.*)", what)
        if m and tid in pending:
            t0, head = pending.pop(tid); what = head + m.group(2); t = t0
        d = re.search(r"<([0-9.]+)>$", what)
        ret = t + (float(d.group(1)) if d else 0.0)
        ev.append((tid, ret, what))
    return ev

rows = []
for name, argv, args in SETUPS:
    port = free_port()
    cap, pcap = capture(port)
    trace = os.path.join(DIR, f"{port}.strace")
    prog = subprocess.Popen(["strace", "-f", "-ttt", "-T", "-e", "trace=close,exit_group,read,recvfrom", "-o", trace] + argv(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_port(port)
    out = subprocess.run([T, "check", f"127.0.0.1:{port}", "--json"] + args, capture_output=True, text=True)
    time.sleep(0.5)
    os.killpg(prog.pid, signal.SIGTERM)
    try: prog.wait(5)
    except subprocess.TimeoutExpired: os.killpg(prog.pid, signal.SIGKILL)
    cap.send_signal(signal.SIGINT); cap.wait(10)
    segs = segments(pcap)
    ev = strace_events(trace)
    for line in out.stdout.splitlines():
        c = json.loads(line)
        if c.get("kind") != "check-case": continue
        row = dict(setup=name, mode=c["mode"], reaction=c["reaction"], by=c.get("noticed_by"), tcpbye=c["noticed_after_us"], res=c["resolution_us"]["noticed"], eof=c["read_eof_after_us"], eof_res=c["resolution_us"]["read_eof"], truth=None, eof_truth=None)
        if c.get("tcpbye_addr") and c.get("action_t_us") is not None:
            p = int(c["tcpbye_addr"].rsplit(":", 1)[1])
            syn = next((s for s in segs if s["src"] == p and s["syn"]), None)
            if syn:
                action = syn["t"] + c["action_t_us"] / 1e6
                # the program's FIN or RST after the action (for a held socket: before tcpbye's own end)
                own_end = min([s["t"] for s in segs if s["src"] == p and (s["fin"] or s["rst"]) and s["t"] > action and c["mode"] in ("drop", "hang")] or [1e18])
                theirs = [s for s in segs if s["dst"] == p and (s["fin"] or s["rst"]) and action < s["t"] < own_end]
                if c["mode"] == "reboot":
                    theirs = [s for s in segs if (s["dst"] == p and s["fin"] and s["t"] > action) or (s["src"] == p and s["rst"] and s["t"] > action)]
                pid = c.get("pid"); fd = c.get("fd")
                closes = [t for (pp, t, what) in ev if t > action and (pid is None or pp == pid or c["mode"] == "rst") and ((fd is not None and what.startswith(f"close({fd})")) or what.startswith("exit_group"))]
                if c["mode"] == "rst" and c["reaction"] in ("closed", "reconnected"):
                    # the holder's release: its close() of the socket, or its exit
                    # any thread of it (strace -f names threads by their own ids)
                    mine = [e for e in ev if e[0] == pid]
                    pool = mine if any(w.startswith(f"close({fd}") for (_, _, w) in mine) else ev
                    rel = [t for (pp, t, what) in pool if t > action and ((fd is not None and (what.startswith(f"close({fd})") or what.startswith(f"close({fd} "))) or (pp == pid and what.startswith("exit_group")))]
                    if rel: row["truth"] = round((rel[0] - action) * 1e6)
                elif theirs:
                    row["truth"] = round((theirs[0]["t"] - action) * 1e6)
                if fd is not None and pid is not None:
                    mine = [e for e in ev if e[0] == pid]
                    pool = mine if any(w.startswith((f"read({fd},", f"recvfrom({fd},")) for (_, _, w) in mine) else ev
                    eofs = [t for (pp, t, what) in pool if t > action and what.startswith((f"read({fd},", f"recvfrom({fd},")) and " = 0 " in what + " "]
                    if eofs: row["eof_truth"] = round((eofs[0] - action) * 1e6)
        rows.append(row)
    if out.returncode not in (0, 1):
        print(f"# {name}: exit {out.returncode}: {out.stderr.strip()}", file=sys.stderr)

def f(us):
    if us is None: return "-"
    return f"{us/1000:.3f}ms" if us < 1_000_000 else f"{us/1e6:.3f}s"
print("| setup | mode | reaction | by | tcpbye after (resolution) | truth | error | tcpbye read EOF (resolution) | truth (strace read=0) | error |")
print("|---|---|---|---|---|---|---|---|---|---|")
worst = {"after": 0, "eof": 0}
for r in rows:
    err = None if r["tcpbye"] is None or r["truth"] is None else r["tcpbye"] - r["truth"]
    eerr = None if r["eof"] is None or r["eof_truth"] is None else r["eof"] - r["eof_truth"]
    if err is not None: worst["after"] = max(worst["after"], abs(err))
    if eerr is not None: worst["eof"] = max(worst["eof"], abs(eerr))
    print(f"| {r['setup']} | {r['mode']} | {r['reaction']} | {r['by'] or '-'} | {f(r['tcpbye'])} ({f(r['res'])}) | {f(r['truth'])} | {'-' if err is None else f'{err/1000:+.3f}ms'} | {f(r['eof'])} ({f(r['eof_res'])}) | {f(r['eof_truth'])} | {'-' if eerr is None else f'{eerr/1000:+.3f}ms'} |")
print(f"\nlargest |error|: after {worst['after']/1000:.3f}ms, read EOF {worst['eof']/1000:.3f}ms")
