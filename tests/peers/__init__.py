"""Real peers on loopback for integration tests, the demo and the benchmarks.

Each peer picks free ports, keeps its files (logs included) in a directory of its own and is
stopped afterwards; see the modules:

* :mod:`.procs`    -- free_port, wait_for_port/http/unix_socket, ManagedProcess
* :mod:`.mint`     -- NutshellMint (nutshell + FakeWallet)
* :mod:`.wallet`   -- CashuWallet (nutshell wallet in ``.venv-mint``, via wallet_server.py)
* :mod:`.upstream` -- EchoUpstream (HTTP/1.1 echo; also ``python -m tests.peers.upstream``)
* :mod:`.proxy`    -- CountingProxy (TCP relay counting connections and requests per path)
* :mod:`.envoy`    -- EnvoyProxy (deploy/envoy/envoy.yaml, rewritten)
* :mod:`.paygress` -- PaygressProcess (``paygress serve``)
"""
