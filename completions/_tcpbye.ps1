
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'tcpbye' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'tcpbye'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'tcpbye' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Listen, observe every connection, print one report per connection as it ends')
            [CompletionResult]::new('connect', 'connect', [CompletionResultType]::ParameterValue, 'Connect to any TCP server, end the connection in a chosen way (or observe), report')
            [CompletionResult]::new('lab', 'lab', [CompletionResultType]::ParameterValue, 'Run both ends in one process for every close mode × detection setting; print the matrix')
            [CompletionResult]::new('check', 'check', [CompletionResultType]::ParameterValue, 'Judge a program: end one connection to the server at ADDR per mode, report how it reacts')
            [CompletionResult]::new('inspect', 'inspect', [CompletionResultType]::ParameterValue, 'Show a running program''s TCP connections: their settings, and what would notice each silent ending')
            [CompletionResult]::new('path', 'path', [CompletionResultType]::ParameterValue, 'Measure the path to a `tcpbye serve` at ADDR: what it does to each ending, and its idle timeout')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script (bash, zsh, fish, elvish, powershell)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'tcpbye;serve' {
            [CompletionResult]::new('--max-conns', '--max-conns', [CompletionResultType]::ParameterName, 'Observe at most N connections at once; further ones are accepted and closed at once')
            [CompletionResult]::new('--close', '--close', [CompletionResultType]::ParameterName, 'How this end closes the connection [default: fin for connect, none for serve]')
            [CompletionResult]::new('--after', '--after', [CompletionResultType]::ParameterName, 'Wait DUR after the connection is up before closing, e.g. `--after 500ms`')
            [CompletionResult]::new('--send', '--send', [CompletionResultType]::ParameterName, 'Send BYTES of data as soon as the connection is up, e.g. `--send 4k`')
            [CompletionResult]::new('--hold', '--hold', [CompletionResultType]::ParameterName, 'How long `drop`/`hang` stay silent before the socket is released [default: until --timeout]')
            [CompletionResult]::new('--linger-watch', '--linger-watch', [CompletionResultType]::ParameterName, 'After closing, follow this side''s socket (FIN_WAIT1/2, TIME_WAIT) for at most DUR')
            [CompletionResult]::new('--keepalive', '--keepalive', [CompletionResultType]::ParameterName, 'SO_KEEPALIVE with IDLE,INTVL,CNT in whole seconds, e.g. `--keepalive 1s,1s,3`')
            [CompletionResult]::new('--user-timeout', '--user-timeout', [CompletionResultType]::ParameterName, 'TCP_USER_TIMEOUT: abort when sent data stays unacknowledged this long, e.g. `1500ms`')
            [CompletionResult]::new('--heartbeat', '--heartbeat', [CompletionResultType]::ParameterName, 'Application ping every INTERVAL; give up after MISSES silent intervals, e.g. `200ms,3`')
            [CompletionResult]::new('--send-every', '--send-every', [CompletionResultType]::ParameterName, 'Send a little data every DUR so that retransmission timeouts apply, e.g. `200ms`')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Stop observing after DUR and report `open` [default: no limit]')
            [CompletionResult]::new('--expect', '--expect', [CompletionResultType]::ParameterName, 'Exit 1 unless every report has this verdict (repeat or comma-separate to allow several)')
            [CompletionResult]::new('--expect-within', '--expect-within', [CompletionResultType]::ParameterName, 'Exit 1 unless every connection''s end was detected within DUR, e.g. `--expect-within 5s`')
            [CompletionResult]::new('--pcap', '--pcap', [CompletionResultType]::ParameterName, 'Capture the connection''s packets (both directions) into a pcap file, e.g. `--pcap end.pcap`')
            [CompletionResult]::new('-4', '-4', [CompletionResultType]::ParameterName, 'Use only the IPv4 addresses of a host name')
            [CompletionResult]::new('--ipv4', '--ipv4', [CompletionResultType]::ParameterName, 'Use only the IPv4 addresses of a host name')
            [CompletionResult]::new('-6', '-6', [CompletionResultType]::ParameterName, 'Use only the IPv6 addresses of a host name')
            [CompletionResult]::new('--ipv6', '--ipv6', [CompletionResultType]::ParameterName, 'Use only the IPv6 addresses of a host name')
            [CompletionResult]::new('--once', '--once', [CompletionResultType]::ParameterName, 'Exit after the first connection''s report')
            [CompletionResult]::new('--summary', '--summary', [CompletionResultType]::ParameterName, 'Print no per-connection reports, only the summary (at exit and on Ctrl-C)')
            [CompletionResult]::new('--no-probe', '--no-probe', [CompletionResultType]::ParameterName, 'After the peer''s FIN or RST, do not send the two probe writes that show what a writer meets')
            [CompletionResult]::new('--no-peer-side', '--no-peer-side', [CompletionResultType]::ParameterName, 'Do not read the other end''s socket through sock_diag (done when it is on this host)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'JSON Lines on stdout: one object per connection, then one summary object')
            [CompletionResult]::new('--ladder', '--ladder', [CompletionResultType]::ParameterName, 'Draw each connection''s ending as a ladder diagram: both ends, one time axis')
            [CompletionResult]::new('--brief', '--brief', [CompletionResultType]::ParameterName, 'One line per connection instead of its tables: verdict, who closed, detection time, errno, state')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'With --pcap: replace FILE if it exists (a symbolic link is never followed)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'tcpbye;connect' {
            [CompletionResult]::new('--connect-timeout', '--connect-timeout', [CompletionResultType]::ParameterName, 'Give up on connect() after DUR and report `connect-timeout`')
            [CompletionResult]::new('--retry', '--retry', [CompletionResultType]::ParameterName, 'Retry a refused connect every 20ms for up to DUR, e.g. `--retry 5s` right after starting `tcpbye serve` in the background')
            [CompletionResult]::new('--count', '--count', [CompletionResultType]::ParameterName, 'Make N connections in turn and print one summary instead of N reports, e.g. `--count 1000`')
            [CompletionResult]::new('--concurrency', '--concurrency', [CompletionResultType]::ParameterName, 'With --count: keep at most C connections open at once')
            [CompletionResult]::new('--rate', '--rate', [CompletionResultType]::ParameterName, 'With --count: start at most R connections per second, e.g. `--rate 500`')
            [CompletionResult]::new('--close', '--close', [CompletionResultType]::ParameterName, 'How this end closes the connection [default: fin for connect, none for serve]')
            [CompletionResult]::new('--after', '--after', [CompletionResultType]::ParameterName, 'Wait DUR after the connection is up before closing, e.g. `--after 500ms`')
            [CompletionResult]::new('--send', '--send', [CompletionResultType]::ParameterName, 'Send BYTES of data as soon as the connection is up, e.g. `--send 4k`')
            [CompletionResult]::new('--hold', '--hold', [CompletionResultType]::ParameterName, 'How long `drop`/`hang` stay silent before the socket is released [default: until --timeout]')
            [CompletionResult]::new('--linger-watch', '--linger-watch', [CompletionResultType]::ParameterName, 'After closing, follow this side''s socket (FIN_WAIT1/2, TIME_WAIT) for at most DUR')
            [CompletionResult]::new('--keepalive', '--keepalive', [CompletionResultType]::ParameterName, 'SO_KEEPALIVE with IDLE,INTVL,CNT in whole seconds, e.g. `--keepalive 1s,1s,3`')
            [CompletionResult]::new('--user-timeout', '--user-timeout', [CompletionResultType]::ParameterName, 'TCP_USER_TIMEOUT: abort when sent data stays unacknowledged this long, e.g. `1500ms`')
            [CompletionResult]::new('--heartbeat', '--heartbeat', [CompletionResultType]::ParameterName, 'Application ping every INTERVAL; give up after MISSES silent intervals, e.g. `200ms,3`')
            [CompletionResult]::new('--send-every', '--send-every', [CompletionResultType]::ParameterName, 'Send a little data every DUR so that retransmission timeouts apply, e.g. `200ms`')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Stop observing after DUR and report `open` [default: no limit]')
            [CompletionResult]::new('--expect', '--expect', [CompletionResultType]::ParameterName, 'Exit 1 unless every report has this verdict (repeat or comma-separate to allow several)')
            [CompletionResult]::new('--expect-within', '--expect-within', [CompletionResultType]::ParameterName, 'Exit 1 unless every connection''s end was detected within DUR, e.g. `--expect-within 5s`')
            [CompletionResult]::new('--pcap', '--pcap', [CompletionResultType]::ParameterName, 'Capture the connection''s packets (both directions) into a pcap file, e.g. `--pcap end.pcap`')
            [CompletionResult]::new('-4', '-4', [CompletionResultType]::ParameterName, 'Use only the IPv4 addresses of a host name')
            [CompletionResult]::new('--ipv4', '--ipv4', [CompletionResultType]::ParameterName, 'Use only the IPv4 addresses of a host name')
            [CompletionResult]::new('-6', '-6', [CompletionResultType]::ParameterName, 'Use only the IPv6 addresses of a host name')
            [CompletionResult]::new('--ipv6', '--ipv6', [CompletionResultType]::ParameterName, 'Use only the IPv6 addresses of a host name')
            [CompletionResult]::new('--no-probe', '--no-probe', [CompletionResultType]::ParameterName, 'After the peer''s FIN or RST, do not send the two probe writes that show what a writer meets')
            [CompletionResult]::new('--no-peer-side', '--no-peer-side', [CompletionResultType]::ParameterName, 'Do not read the other end''s socket through sock_diag (done when it is on this host)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'JSON Lines on stdout: one object per connection, then one summary object')
            [CompletionResult]::new('--ladder', '--ladder', [CompletionResultType]::ParameterName, 'Draw each connection''s ending as a ladder diagram: both ends, one time axis')
            [CompletionResult]::new('--brief', '--brief', [CompletionResultType]::ParameterName, 'One line per connection instead of its tables: verdict, who closed, detection time, errno, state')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'With --pcap: replace FILE if it exists (a symbolic link is never followed)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'tcpbye;lab' {
            [CompletionResult]::new('--modes', '--modes', [CompletionResultType]::ParameterName, 'Close modes to run, comma-separated, e.g. `--modes fin,rst,drop` [default: all but none]')
            [CompletionResult]::new('--settings', '--settings', [CompletionResultType]::ParameterName, 'Detection settings of the observer to run, comma-separated [default: all]')
            [CompletionResult]::new('--runs', '--runs', [CompletionResultType]::ParameterName, 'Repetitions of each case, for the p50/p99 columns')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'JSON Lines: one object per case, then one summary object')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'tcpbye;check' {
            [CompletionResult]::new('--pid', '--pid', [CompletionResultType]::ParameterName, 'Judge a running program on its own live connections instead: end one of them per mode as its peer would, e.g. `--pid $(pidof redis-server)`')
            [CompletionResult]::new('--peer', '--peer', [CompletionResultType]::ParameterName, 'With --pid: end only connections to this peer, IP:PORT or IP, e.g. `--peer 127.0.0.1:6379`')
            [CompletionResult]::new('--wait-client', '--wait-client', [CompletionResultType]::ParameterName, 'With --listen: how long to wait for the client''s first connection before giving up (exit 3), e.g. `--wait-client 5m`')
            [CompletionResult]::new('--modes', '--modes', [CompletionResultType]::ParameterName, 'Endings to try, one fresh connection each, comma-separated, e.g. `--modes fin,rst` [default: fin,half,rst,hang, plus drop,reboot with CAP_NET_ADMIN]')
            [CompletionResult]::new('--request', '--request', [CompletionResultType]::ParameterName, 'Send STRING first and wait (up to 2s) for the answer''s first bytes before ending, e.g. `--request ''PING\r\n''` (escapes: \r \n \t \0 \\ \xHH)')
            [CompletionResult]::new('--send', '--send', [CompletionResultType]::ParameterName, 'Send BYTES of filler first (after --request) and wait (up to 2s) for an answer, e.g. `--send 1k`')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'Watch the program for DUR after ending each connection, e.g. `--wait 3s`')
            [CompletionResult]::new('--wait-silent', '--wait-silent', [CompletionResultType]::ParameterName, 'Watch the silent endings (drop, reboot, hang) for DUR instead of --wait, to find a timeout of the program''s own, e.g. `--wait 3s --wait-silent 2m`')
            [CompletionResult]::new('--expect-noticed-within', '--expect-noticed-within', [CompletionResultType]::ParameterName, 'Exit 1 unless the program noticed every judged ending within DUR, or per mode: `drop=60s,fin=1s`')
            [CompletionResult]::new('--dry-run', '--dry-run', [CompletionResultType]::ParameterName, 'With --pid: print which connection each mode would end, how and why, and touch nothing')
            [CompletionResult]::new('--listen', '--listen', [CompletionResultType]::ParameterName, 'The program under test is a client: listen on ADDR, end each connection it makes in the next mode (once its first bytes arrive, or after 2s), and see whether and when it connects again')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'JSON Lines: one `check-case` object per mode, then one `check-summary`')
            [CompletionResult]::new('--brief', '--brief', [CompletionResultType]::ParameterName, 'One line per mode instead of the table: its reaction and when')
            [CompletionResult]::new('--expect-no-leak', '--expect-no-leak', [CompletionResultType]::ParameterName, 'Exit 1 if any connection was leaked: CLOSE_WAIT, or a dead socket''s descriptor, still held at the end')
            [CompletionResult]::new('--leave-open', '--leave-open', [CompletionResultType]::ParameterName, 'Leave the drop and reboot connections that the program never noticed open after --wait, to watch them longer by hand (by default tcpbye resets them then); with --pid, leave the drop and hang filters on the sockets it still holds')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'tcpbye;inspect' {
            [CompletionResult]::new('--port', '--port', [CompletionResultType]::ParameterName, 'Inspect the processes that hold a TCP socket on this local port instead, e.g. `--port 6379`')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'JSON Lines: one `inspect-conn` object per connection, then one `inspect-summary`')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'tcpbye;path' {
            [CompletionResult]::new('--tests', '--tests', [CompletionResultType]::ParameterName, 'Tests to run, comma-separated, e.g. `--tests fin,rst` [default: all]')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'How long an ending, an answer from the far end, or an ACK of data sent after an idle period may take before it counts as lost')
            [CompletionResult]::new('--max-idle', '--max-idle', [CompletionResultType]::ParameterName, 'The longest idle period tried: the first ladder doubles up to it, e.g. `--max-idle 8s`')
            [CompletionResult]::new('--idle-ladder', '--idle-ladder', [CompletionResultType]::ParameterName, 'The first ladder''s idle periods instead of the doubling one, e.g. `--idle-ladder 1s,2s,4s`')
            [CompletionResult]::new('--expect-idle-over', '--expect-idle-over', [CompletionResultType]::ParameterName, 'Exit 1 unless an idle period of at least DUR survived (and none shorter failed), e.g. `5m`')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'JSON Lines: one `path-case` object per test, then one `path-summary`')
            [CompletionResult]::new('--expect-faithful', '--expect-faithful', [CompletionResultType]::ParameterName, 'Exit 1 unless every ending arrived as it was sent, in both directions')
            [CompletionResult]::new('--confirm-keepalive', '--confirm-keepalive', [CompletionResultType]::ParameterName, 'Once an idle timeout is found, try keepalive against it: one more connection with a keepalive shorter than the timeout (the advised one, if any) stays idle for twice the timeout, then sends (`path-summary.keepalive_tried`)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'tcpbye;completions' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'tcpbye;help' {
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Listen, observe every connection, print one report per connection as it ends')
            [CompletionResult]::new('connect', 'connect', [CompletionResultType]::ParameterValue, 'Connect to any TCP server, end the connection in a chosen way (or observe), report')
            [CompletionResult]::new('lab', 'lab', [CompletionResultType]::ParameterValue, 'Run both ends in one process for every close mode × detection setting; print the matrix')
            [CompletionResult]::new('check', 'check', [CompletionResultType]::ParameterValue, 'Judge a program: end one connection to the server at ADDR per mode, report how it reacts')
            [CompletionResult]::new('inspect', 'inspect', [CompletionResultType]::ParameterValue, 'Show a running program''s TCP connections: their settings, and what would notice each silent ending')
            [CompletionResult]::new('path', 'path', [CompletionResultType]::ParameterValue, 'Measure the path to a `tcpbye serve` at ADDR: what it does to each ending, and its idle timeout')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script (bash, zsh, fish, elvish, powershell)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'tcpbye;help;serve' {
            break
        }
        'tcpbye;help;connect' {
            break
        }
        'tcpbye;help;lab' {
            break
        }
        'tcpbye;help;check' {
            break
        }
        'tcpbye;help;inspect' {
            break
        }
        'tcpbye;help;path' {
            break
        }
        'tcpbye;help;completions' {
            break
        }
        'tcpbye;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
