"""`make bench`: what the generated harness buys, timed side by side against pytest alone.

A fresh bake gets N copies of the canonical WebSocket test (user, token, connect, subscribe,
publish, receive, disconnect, server-side drain) and N empty async tests. Each round runs every
configuration once, in a rotated order so machine drift hits them all alike:

    floor         the N empty tests: pytest, the session loop and the harness's run-level hooks
    naive         --app-scope=function: Resources, app and server built for every test
    shared        the harness as shipped, one process
    shared_xdist  the harness as shipped, -n 2 (and -n 4 and -n auto where there are more cores)

Medians over the rounds, the raw timings and every run's fixture-stack report go to a JSON file
(bench/results/latest.json unless --output says otherwise), and a bar chart beside it as PNG.
With --profile, floor and shared then run once more under py-spy, and the file also says where
a WebSocket test's CPU goes above the floor's, by library (bench/profiling.py).
"""
