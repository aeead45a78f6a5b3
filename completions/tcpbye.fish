# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_tcpbye_global_optspecs
    string join \n h/help V/version
end

function __fish_tcpbye_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_tcpbye_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_tcpbye_using_subcommand
    set -l cmd (__fish_tcpbye_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c tcpbye -n "__fish_tcpbye_needs_command" -s h -l help -d 'Print help'
complete -c tcpbye -n "__fish_tcpbye_needs_command" -s V -l version -d 'Print version'
complete -c tcpbye -n "__fish_tcpbye_needs_command" -f -a "serve" -d 'Listen, observe every connection, print one report per connection as it ends'
complete -c tcpbye -n "__fish_tcpbye_needs_command" -f -a "connect" -d 'Connect to any TCP server, end the connection in a chosen way (or observe), report'
complete -c tcpbye -n "__fish_tcpbye_needs_command" -f -a "lab" -d 'Run both ends in one process for every close mode × detection setting; print the matrix'
complete -c tcpbye -n "__fish_tcpbye_needs_command" -f -a "check" -d 'Judge a program: end one connection to the server at ADDR per mode, report how it reacts'
complete -c tcpbye -n "__fish_tcpbye_needs_command" -f -a "inspect" -d 'Show a running program\'s TCP connections: their settings, and what would notice each silent ending'
complete -c tcpbye -n "__fish_tcpbye_needs_command" -f -a "path" -d 'Measure the path to a `tcpbye serve` at ADDR: what it does to each ending, and its idle timeout'
complete -c tcpbye -n "__fish_tcpbye_needs_command" -f -a "completions" -d 'Print a shell completion script (bash, zsh, fish, elvish, powershell)'
complete -c tcpbye -n "__fish_tcpbye_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand serve" -l max-conns -d 'Observe at most N connections at once; further ones are accepted and closed at once' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand serve" -l close -d 'How this end closes the connection [default: fin for connect, none for serve]' -r -f -a "fin\t'close(): a FIN; the peer reads EOF'
half\t'shutdown(SHUT_WR), keep reading until the peer\'s FIN, then close'
rst\t'SO_LINGER {on, 0} + close(): an RST; the peer gets ECONNRESET'
rst-unread\t'close() with received data unread: Linux sends an RST, not a FIN; needs data from the peer (`serve --send 1k`), else it waits 1s and sends a FIN'
drop\t'vanish silently like a pulled cable: nothing sent, nothing answered (CAP_NET_ADMIN)'
reboot\t'the socket disappears without a packet; the peer\'s next segment meets an RST (CAP_NET_ADMIN)'
hang\t'the process hangs: socket open, never read or written again'
none\t'do not close: observe until the peer ends it or --timeout passes'"
complete -c tcpbye -n "__fish_tcpbye_using_subcommand serve" -l after -d 'Wait DUR after the connection is up before closing, e.g. `--after 500ms`' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand serve" -l send -d 'Send BYTES of data as soon as the connection is up, e.g. `--send 4k`' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand serve" -l hold -d 'How long `drop`/`hang` stay silent before the socket is released [default: until --timeout]' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand serve" -l linger-watch -d 'After closing, follow this side\'s socket (FIN_WAIT1/2, TIME_WAIT) for at most DUR' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand serve" -l keepalive -d 'SO_KEEPALIVE with IDLE,INTVL,CNT in whole seconds, e.g. `--keepalive 1s,1s,3`' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand serve" -l user-timeout -d 'TCP_USER_TIMEOUT: abort when sent data stays unacknowledged this long, e.g. `1500ms`' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand serve" -l heartbeat -d 'Application ping every INTERVAL; give up after MISSES silent intervals, e.g. `200ms,3`' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand serve" -l send-every -d 'Send a little data every DUR so that retransmission timeouts apply, e.g. `200ms`' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand serve" -l timeout -d 'Stop observing after DUR and report `open` [default: no limit]' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand serve" -l expect -d 'Exit 1 unless every report has this verdict (repeat or comma-separate to allow several)' -r -f -a "fin\t'the peer sent a FIN: recv() returned 0 (EOF)'
rst\t'the peer sent an RST: ECONNRESET (or EPIPE on send)'
timeout\t'the kernel gave up (ETIMEDOUT) by keepalive, user timeout or retransmissions'
heartbeat\t'the application heartbeat went unanswered'
open\t'nothing detected before --timeout'
refused\t'connect(): ECONNREFUSED'
unreachable\t'connect(): EHOSTUNREACH or ENETUNREACH'
connect-timeout\t'connect() did not complete within --connect-timeout'
error\t'another socket error (named in the timeline)'"
complete -c tcpbye -n "__fish_tcpbye_using_subcommand serve" -l expect-within -d 'Exit 1 unless every connection\'s end was detected within DUR, e.g. `--expect-within 5s`' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand serve" -l pcap -d 'Capture the connection\'s packets (both directions) into a pcap file, e.g. `--pcap end.pcap`' -r -F
complete -c tcpbye -n "__fish_tcpbye_using_subcommand serve" -s 4 -l ipv4 -d 'Use only the IPv4 addresses of a host name'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand serve" -s 6 -l ipv6 -d 'Use only the IPv6 addresses of a host name'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand serve" -l once -d 'Exit after the first connection\'s report'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand serve" -l summary -d 'Print no per-connection reports, only the summary (at exit and on Ctrl-C)'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand serve" -l no-probe -d 'After the peer\'s FIN or RST, do not send the two probe writes that show what a writer meets'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand serve" -l no-peer-side -d 'Do not read the other end\'s socket through sock_diag (done when it is on this host)'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand serve" -l json -d 'JSON Lines on stdout: one object per connection, then one summary object'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand serve" -l ladder -d 'Draw each connection\'s ending as a ladder diagram: both ends, one time axis'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand serve" -l brief -d 'One line per connection instead of its tables: verdict, who closed, detection time, errno, state'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand serve" -l force -d 'With --pcap: replace FILE if it exists (a symbolic link is never followed)'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand serve" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand serve" -s V -l version -d 'Print version'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand connect" -l connect-timeout -d 'Give up on connect() after DUR and report `connect-timeout`' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand connect" -l retry -d 'Retry a refused connect every 20ms for up to DUR, e.g. `--retry 5s` right after starting `tcpbye serve` in the background' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand connect" -l count -d 'Make N connections in turn and print one summary instead of N reports, e.g. `--count 1000`' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand connect" -l concurrency -d 'With --count: keep at most C connections open at once' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand connect" -l rate -d 'With --count: start at most R connections per second, e.g. `--rate 500`' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand connect" -l close -d 'How this end closes the connection [default: fin for connect, none for serve]' -r -f -a "fin\t'close(): a FIN; the peer reads EOF'
half\t'shutdown(SHUT_WR), keep reading until the peer\'s FIN, then close'
rst\t'SO_LINGER {on, 0} + close(): an RST; the peer gets ECONNRESET'
rst-unread\t'close() with received data unread: Linux sends an RST, not a FIN; needs data from the peer (`serve --send 1k`), else it waits 1s and sends a FIN'
drop\t'vanish silently like a pulled cable: nothing sent, nothing answered (CAP_NET_ADMIN)'
reboot\t'the socket disappears without a packet; the peer\'s next segment meets an RST (CAP_NET_ADMIN)'
hang\t'the process hangs: socket open, never read or written again'
none\t'do not close: observe until the peer ends it or --timeout passes'"
complete -c tcpbye -n "__fish_tcpbye_using_subcommand connect" -l after -d 'Wait DUR after the connection is up before closing, e.g. `--after 500ms`' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand connect" -l send -d 'Send BYTES of data as soon as the connection is up, e.g. `--send 4k`' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand connect" -l hold -d 'How long `drop`/`hang` stay silent before the socket is released [default: until --timeout]' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand connect" -l linger-watch -d 'After closing, follow this side\'s socket (FIN_WAIT1/2, TIME_WAIT) for at most DUR' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand connect" -l keepalive -d 'SO_KEEPALIVE with IDLE,INTVL,CNT in whole seconds, e.g. `--keepalive 1s,1s,3`' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand connect" -l user-timeout -d 'TCP_USER_TIMEOUT: abort when sent data stays unacknowledged this long, e.g. `1500ms`' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand connect" -l heartbeat -d 'Application ping every INTERVAL; give up after MISSES silent intervals, e.g. `200ms,3`' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand connect" -l send-every -d 'Send a little data every DUR so that retransmission timeouts apply, e.g. `200ms`' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand connect" -l timeout -d 'Stop observing after DUR and report `open` [default: no limit]' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand connect" -l expect -d 'Exit 1 unless every report has this verdict (repeat or comma-separate to allow several)' -r -f -a "fin\t'the peer sent a FIN: recv() returned 0 (EOF)'
rst\t'the peer sent an RST: ECONNRESET (or EPIPE on send)'
timeout\t'the kernel gave up (ETIMEDOUT) by keepalive, user timeout or retransmissions'
heartbeat\t'the application heartbeat went unanswered'
open\t'nothing detected before --timeout'
refused\t'connect(): ECONNREFUSED'
unreachable\t'connect(): EHOSTUNREACH or ENETUNREACH'
connect-timeout\t'connect() did not complete within --connect-timeout'
error\t'another socket error (named in the timeline)'"
complete -c tcpbye -n "__fish_tcpbye_using_subcommand connect" -l expect-within -d 'Exit 1 unless every connection\'s end was detected within DUR, e.g. `--expect-within 5s`' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand connect" -l pcap -d 'Capture the connection\'s packets (both directions) into a pcap file, e.g. `--pcap end.pcap`' -r -F
complete -c tcpbye -n "__fish_tcpbye_using_subcommand connect" -s 4 -l ipv4 -d 'Use only the IPv4 addresses of a host name'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand connect" -s 6 -l ipv6 -d 'Use only the IPv6 addresses of a host name'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand connect" -l no-probe -d 'After the peer\'s FIN or RST, do not send the two probe writes that show what a writer meets'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand connect" -l no-peer-side -d 'Do not read the other end\'s socket through sock_diag (done when it is on this host)'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand connect" -l json -d 'JSON Lines on stdout: one object per connection, then one summary object'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand connect" -l ladder -d 'Draw each connection\'s ending as a ladder diagram: both ends, one time axis'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand connect" -l brief -d 'One line per connection instead of its tables: verdict, who closed, detection time, errno, state'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand connect" -l force -d 'With --pcap: replace FILE if it exists (a symbolic link is never followed)'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand connect" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand connect" -s V -l version -d 'Print version'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand lab" -l modes -d 'Close modes to run, comma-separated, e.g. `--modes fin,rst,drop` [default: all but none]' -r -f -a "fin\t'close(): a FIN; the peer reads EOF'
half\t'shutdown(SHUT_WR), keep reading until the peer\'s FIN, then close'
rst\t'SO_LINGER {on, 0} + close(): an RST; the peer gets ECONNRESET'
rst-unread\t'close() with received data unread: Linux sends an RST, not a FIN; needs data from the peer (`serve --send 1k`), else it waits 1s and sends a FIN'
drop\t'vanish silently like a pulled cable: nothing sent, nothing answered (CAP_NET_ADMIN)'
reboot\t'the socket disappears without a packet; the peer\'s next segment meets an RST (CAP_NET_ADMIN)'
hang\t'the process hangs: socket open, never read or written again'
none\t'do not close: observe until the peer ends it or --timeout passes'"
complete -c tcpbye -n "__fish_tcpbye_using_subcommand lab" -l settings -d 'Detection settings of the observer to run, comma-separated [default: all]' -r -f -a "none\t'plain reads only'
keepalive\t'--keepalive 1s,1s,2'
user-timeout\t'--user-timeout 1500ms --send-every 200ms'
heartbeat\t'--heartbeat 200ms,3'"
complete -c tcpbye -n "__fish_tcpbye_using_subcommand lab" -l runs -d 'Repetitions of each case, for the p50/p99 columns' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand lab" -l json -d 'JSON Lines: one object per case, then one summary object'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand lab" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand lab" -s V -l version -d 'Print version'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand check" -l pid -d 'Judge a running program on its own live connections instead: end one of them per mode as its peer would, e.g. `--pid $(pidof redis-server)`' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand check" -l peer -d 'With --pid: end only connections to this peer, IP:PORT or IP, e.g. `--peer 127.0.0.1:6379`' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand check" -l wait-client -d 'With --listen: how long to wait for the client\'s first connection before giving up (exit 3), e.g. `--wait-client 5m`' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand check" -l modes -d 'Endings to try, one fresh connection each, comma-separated, e.g. `--modes fin,rst` [default: fin,half,rst,hang, plus drop,reboot with CAP_NET_ADMIN]' -r -f -a "fin\t'tcpbye closes (FIN): does the program read EOF and close?'
half\t'tcpbye shuts down its sending side (FIN) and keeps reading'
rst\t'tcpbye resets (RST): does the program close after ECONNRESET?'
drop\t'tcpbye vanishes like a pulled cable: nothing sent or answered (CAP_NET_ADMIN)'
reboot\t'tcpbye\'s host "reboots": the program\'s next segment meets an RST (CAP_NET_ADMIN)'
hang\t'tcpbye hangs: its kernel ACKs, nothing is read or written'"
complete -c tcpbye -n "__fish_tcpbye_using_subcommand check" -l request -d 'Send STRING first and wait (up to 2s) for the answer\'s first bytes before ending, e.g. `--request \'PING\\r\\n\'` (escapes: \\r \\n \\t \\0 \\\\ \\xHH)' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand check" -l send -d 'Send BYTES of filler first (after --request) and wait (up to 2s) for an answer, e.g. `--send 1k`' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand check" -l wait -d 'Watch the program for DUR after ending each connection, e.g. `--wait 3s`' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand check" -l wait-silent -d 'Watch the silent endings (drop, reboot, hang) for DUR instead of --wait, to find a timeout of the program\'s own, e.g. `--wait 3s --wait-silent 2m`' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand check" -l expect-noticed-within -d 'Exit 1 unless the program noticed every judged ending within DUR, or per mode: `drop=60s,fin=1s`' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand check" -l dry-run -d 'With --pid: print which connection each mode would end, how and why, and touch nothing'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand check" -l listen -d 'The program under test is a client: listen on ADDR, end each connection it makes in the next mode (once its first bytes arrive, or after 2s), and see whether and when it connects again'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand check" -l json -d 'JSON Lines: one `check-case` object per mode, then one `check-summary`'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand check" -l brief -d 'One line per mode instead of the table: its reaction and when'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand check" -l expect-no-leak -d 'Exit 1 if any connection was leaked: CLOSE_WAIT, or a dead socket\'s descriptor, still held at the end'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand check" -l leave-open -d 'Leave the drop and reboot connections that the program never noticed open after --wait, to watch them longer by hand (by default tcpbye resets them then); with --pid, leave the drop and hang filters on the sockets it still holds'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand check" -s V -l version -d 'Print version'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand inspect" -l port -d 'Inspect the processes that hold a TCP socket on this local port instead, e.g. `--port 6379`' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand inspect" -l json -d 'JSON Lines: one `inspect-conn` object per connection, then one `inspect-summary`'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand inspect" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand inspect" -s V -l version -d 'Print version'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand path" -l tests -d 'Tests to run, comma-separated, e.g. `--tests fin,rst` [default: all]' -r -f -a "fin\t'close(): does the FIN arrive as a FIN, both ways?'
rst\t'SO_LINGER {on, 0} + close(): does the RST arrive as an RST, both ways?'
half\t'shutdown(SHUT_WR): the FIN arrives, and data still flows the other way after it'
rst-unread\t'close() with unread data (an RST on Linux): does the RST arrive?'
idle\t'idle connections on a ladder of durations: the path\'s idle timeout'"
complete -c tcpbye -n "__fish_tcpbye_using_subcommand path" -l wait -d 'How long an ending, an answer from the far end, or an ACK of data sent after an idle period may take before it counts as lost' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand path" -l max-idle -d 'The longest idle period tried: the first ladder doubles up to it, e.g. `--max-idle 8s`' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand path" -l idle-ladder -d 'The first ladder\'s idle periods instead of the doubling one, e.g. `--idle-ladder 1s,2s,4s`' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand path" -l expect-idle-over -d 'Exit 1 unless an idle period of at least DUR survived (and none shorter failed), e.g. `5m`' -r
complete -c tcpbye -n "__fish_tcpbye_using_subcommand path" -l json -d 'JSON Lines: one `path-case` object per test, then one `path-summary`'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand path" -l expect-faithful -d 'Exit 1 unless every ending arrived as it was sent, in both directions'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand path" -l confirm-keepalive -d 'Once an idle timeout is found, try keepalive against it: one more connection with a keepalive shorter than the timeout (the advised one, if any) stays idle for twice the timeout, then sends (`path-summary.keepalive_tried`)'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand path" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand path" -s V -l version -d 'Print version'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand completions" -s h -l help -d 'Print help'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand completions" -s V -l version -d 'Print version'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand help; and not __fish_seen_subcommand_from serve connect lab check inspect path completions help" -f -a "serve" -d 'Listen, observe every connection, print one report per connection as it ends'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand help; and not __fish_seen_subcommand_from serve connect lab check inspect path completions help" -f -a "connect" -d 'Connect to any TCP server, end the connection in a chosen way (or observe), report'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand help; and not __fish_seen_subcommand_from serve connect lab check inspect path completions help" -f -a "lab" -d 'Run both ends in one process for every close mode × detection setting; print the matrix'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand help; and not __fish_seen_subcommand_from serve connect lab check inspect path completions help" -f -a "check" -d 'Judge a program: end one connection to the server at ADDR per mode, report how it reacts'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand help; and not __fish_seen_subcommand_from serve connect lab check inspect path completions help" -f -a "inspect" -d 'Show a running program\'s TCP connections: their settings, and what would notice each silent ending'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand help; and not __fish_seen_subcommand_from serve connect lab check inspect path completions help" -f -a "path" -d 'Measure the path to a `tcpbye serve` at ADDR: what it does to each ending, and its idle timeout'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand help; and not __fish_seen_subcommand_from serve connect lab check inspect path completions help" -f -a "completions" -d 'Print a shell completion script (bash, zsh, fish, elvish, powershell)'
complete -c tcpbye -n "__fish_tcpbye_using_subcommand help; and not __fish_seen_subcommand_from serve connect lab check inspect path completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
