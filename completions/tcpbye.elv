
use builtin;
use str;

set edit:completion:arg-completer[tcpbye] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'tcpbye'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'tcpbye'= {
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand serve 'Listen, observe every connection, print one report per connection as it ends'
            cand connect 'Connect to any TCP server, end the connection in a chosen way (or observe), report'
            cand lab 'Run both ends in one process for every close mode × detection setting; print the matrix'
            cand check 'Judge a program: end one connection to the server at ADDR per mode, report how it reacts'
            cand inspect 'Show a running program''s TCP connections: their settings, and what would notice each silent ending'
            cand path 'Measure the path to a `tcpbye serve` at ADDR: what it does to each ending, and its idle timeout'
            cand completions 'Print a shell completion script (bash, zsh, fish, elvish, powershell)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'tcpbye;serve'= {
            cand --max-conns 'Observe at most N connections at once; further ones are accepted and closed at once'
            cand --close 'How this end closes the connection [default: fin for connect, none for serve]'
            cand --after 'Wait DUR after the connection is up before closing, e.g. `--after 500ms`'
            cand --send 'Send BYTES of data as soon as the connection is up, e.g. `--send 4k`'
            cand --hold 'How long `drop`/`hang` stay silent before the socket is released [default: until --timeout]'
            cand --linger-watch 'After closing, follow this side''s socket (FIN_WAIT1/2, TIME_WAIT) for at most DUR'
            cand --keepalive 'SO_KEEPALIVE with IDLE,INTVL,CNT in whole seconds, e.g. `--keepalive 1s,1s,3`'
            cand --user-timeout 'TCP_USER_TIMEOUT: abort when sent data stays unacknowledged this long, e.g. `1500ms`'
            cand --heartbeat 'Application ping every INTERVAL; give up after MISSES silent intervals, e.g. `200ms,3`'
            cand --send-every 'Send a little data every DUR so that retransmission timeouts apply, e.g. `200ms`'
            cand --timeout 'Stop observing after DUR and report `open` [default: no limit]'
            cand --expect 'Exit 1 unless every report has this verdict (repeat or comma-separate to allow several)'
            cand --expect-within 'Exit 1 unless every connection''s end was detected within DUR, e.g. `--expect-within 5s`'
            cand --pcap 'Capture the connection''s packets (both directions) into a pcap file, e.g. `--pcap end.pcap`'
            cand -4 'Use only the IPv4 addresses of a host name'
            cand --ipv4 'Use only the IPv4 addresses of a host name'
            cand -6 'Use only the IPv6 addresses of a host name'
            cand --ipv6 'Use only the IPv6 addresses of a host name'
            cand --once 'Exit after the first connection''s report'
            cand --summary 'Print no per-connection reports, only the summary (at exit and on Ctrl-C)'
            cand --no-probe 'After the peer''s FIN or RST, do not send the two probe writes that show what a writer meets'
            cand --no-peer-side 'Do not read the other end''s socket through sock_diag (done when it is on this host)'
            cand --json 'JSON Lines on stdout: one object per connection, then one summary object'
            cand --ladder 'Draw each connection''s ending as a ladder diagram: both ends, one time axis'
            cand --brief 'One line per connection instead of its tables: verdict, who closed, detection time, errno, state'
            cand --force 'With --pcap: replace FILE if it exists (a symbolic link is never followed)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'tcpbye;connect'= {
            cand --connect-timeout 'Give up on connect() after DUR and report `connect-timeout`'
            cand --retry 'Retry a refused connect every 20ms for up to DUR, e.g. `--retry 5s` right after starting `tcpbye serve` in the background'
            cand --count 'Make N connections in turn and print one summary instead of N reports, e.g. `--count 1000`'
            cand --concurrency 'With --count: keep at most C connections open at once'
            cand --rate 'With --count: start at most R connections per second, e.g. `--rate 500`'
            cand --close 'How this end closes the connection [default: fin for connect, none for serve]'
            cand --after 'Wait DUR after the connection is up before closing, e.g. `--after 500ms`'
            cand --send 'Send BYTES of data as soon as the connection is up, e.g. `--send 4k`'
            cand --hold 'How long `drop`/`hang` stay silent before the socket is released [default: until --timeout]'
            cand --linger-watch 'After closing, follow this side''s socket (FIN_WAIT1/2, TIME_WAIT) for at most DUR'
            cand --keepalive 'SO_KEEPALIVE with IDLE,INTVL,CNT in whole seconds, e.g. `--keepalive 1s,1s,3`'
            cand --user-timeout 'TCP_USER_TIMEOUT: abort when sent data stays unacknowledged this long, e.g. `1500ms`'
            cand --heartbeat 'Application ping every INTERVAL; give up after MISSES silent intervals, e.g. `200ms,3`'
            cand --send-every 'Send a little data every DUR so that retransmission timeouts apply, e.g. `200ms`'
            cand --timeout 'Stop observing after DUR and report `open` [default: no limit]'
            cand --expect 'Exit 1 unless every report has this verdict (repeat or comma-separate to allow several)'
            cand --expect-within 'Exit 1 unless every connection''s end was detected within DUR, e.g. `--expect-within 5s`'
            cand --pcap 'Capture the connection''s packets (both directions) into a pcap file, e.g. `--pcap end.pcap`'
            cand -4 'Use only the IPv4 addresses of a host name'
            cand --ipv4 'Use only the IPv4 addresses of a host name'
            cand -6 'Use only the IPv6 addresses of a host name'
            cand --ipv6 'Use only the IPv6 addresses of a host name'
            cand --no-probe 'After the peer''s FIN or RST, do not send the two probe writes that show what a writer meets'
            cand --no-peer-side 'Do not read the other end''s socket through sock_diag (done when it is on this host)'
            cand --json 'JSON Lines on stdout: one object per connection, then one summary object'
            cand --ladder 'Draw each connection''s ending as a ladder diagram: both ends, one time axis'
            cand --brief 'One line per connection instead of its tables: verdict, who closed, detection time, errno, state'
            cand --force 'With --pcap: replace FILE if it exists (a symbolic link is never followed)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'tcpbye;lab'= {
            cand --modes 'Close modes to run, comma-separated, e.g. `--modes fin,rst,drop` [default: all but none]'
            cand --settings 'Detection settings of the observer to run, comma-separated [default: all]'
            cand --runs 'Repetitions of each case, for the p50/p99 columns'
            cand --json 'JSON Lines: one object per case, then one summary object'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'tcpbye;check'= {
            cand --pid 'Judge a running program on its own live connections instead: end one of them per mode as its peer would, e.g. `--pid $(pidof redis-server)`'
            cand --peer 'With --pid: end only connections to this peer, IP:PORT or IP, e.g. `--peer 127.0.0.1:6379`'
            cand --wait-client 'With --listen: how long to wait for the client''s first connection before giving up (exit 3), e.g. `--wait-client 5m`'
            cand --modes 'Endings to try, one fresh connection each, comma-separated, e.g. `--modes fin,rst` [default: fin,half,rst,hang, plus drop,reboot with CAP_NET_ADMIN]'
            cand --request 'Send STRING first and wait (up to 2s) for the answer''s first bytes before ending, e.g. `--request ''PING\r\n''` (escapes: \r \n \t \0 \\ \xHH)'
            cand --send 'Send BYTES of filler first (after --request) and wait (up to 2s) for an answer, e.g. `--send 1k`'
            cand --wait 'Watch the program for DUR after ending each connection, e.g. `--wait 3s`'
            cand --wait-silent 'Watch the silent endings (drop, reboot, hang) for DUR instead of --wait, to find a timeout of the program''s own, e.g. `--wait 3s --wait-silent 2m`'
            cand --expect-noticed-within 'Exit 1 unless the program noticed every judged ending within DUR, or per mode: `drop=60s,fin=1s`'
            cand --dry-run 'With --pid: print which connection each mode would end, how and why, and touch nothing'
            cand --listen 'The program under test is a client: listen on ADDR, end each connection it makes in the next mode (once its first bytes arrive, or after 2s), and see whether and when it connects again'
            cand --json 'JSON Lines: one `check-case` object per mode, then one `check-summary`'
            cand --brief 'One line per mode instead of the table: its reaction and when'
            cand --expect-no-leak 'Exit 1 if any connection was leaked: CLOSE_WAIT, or a dead socket''s descriptor, still held at the end'
            cand --leave-open 'Leave the drop and reboot connections that the program never noticed open after --wait, to watch them longer by hand (by default tcpbye resets them then); with --pid, leave the drop and hang filters on the sockets it still holds'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'tcpbye;inspect'= {
            cand --port 'Inspect the processes that hold a TCP socket on this local port instead, e.g. `--port 6379`'
            cand --json 'JSON Lines: one `inspect-conn` object per connection, then one `inspect-summary`'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'tcpbye;path'= {
            cand --tests 'Tests to run, comma-separated, e.g. `--tests fin,rst` [default: all]'
            cand --wait 'How long an ending, an answer from the far end, or an ACK of data sent after an idle period may take before it counts as lost'
            cand --max-idle 'The longest idle period tried: the first ladder doubles up to it, e.g. `--max-idle 8s`'
            cand --idle-ladder 'The first ladder''s idle periods instead of the doubling one, e.g. `--idle-ladder 1s,2s,4s`'
            cand --expect-idle-over 'Exit 1 unless an idle period of at least DUR survived (and none shorter failed), e.g. `5m`'
            cand --json 'JSON Lines: one `path-case` object per test, then one `path-summary`'
            cand --expect-faithful 'Exit 1 unless every ending arrived as it was sent, in both directions'
            cand --confirm-keepalive 'Once an idle timeout is found, try keepalive against it: one more connection with a keepalive shorter than the timeout (the advised one, if any) stays idle for twice the timeout, then sends (`path-summary.keepalive_tried`)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'tcpbye;completions'= {
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'tcpbye;help'= {
            cand serve 'Listen, observe every connection, print one report per connection as it ends'
            cand connect 'Connect to any TCP server, end the connection in a chosen way (or observe), report'
            cand lab 'Run both ends in one process for every close mode × detection setting; print the matrix'
            cand check 'Judge a program: end one connection to the server at ADDR per mode, report how it reacts'
            cand inspect 'Show a running program''s TCP connections: their settings, and what would notice each silent ending'
            cand path 'Measure the path to a `tcpbye serve` at ADDR: what it does to each ending, and its idle timeout'
            cand completions 'Print a shell completion script (bash, zsh, fish, elvish, powershell)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'tcpbye;help;serve'= {
        }
        &'tcpbye;help;connect'= {
        }
        &'tcpbye;help;lab'= {
        }
        &'tcpbye;help;check'= {
        }
        &'tcpbye;help;inspect'= {
        }
        &'tcpbye;help;path'= {
        }
        &'tcpbye;help;completions'= {
        }
        &'tcpbye;help;help'= {
        }
    ]
    $completions[$command]
}
