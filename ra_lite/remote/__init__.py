"""Judging on existing servers (llama.cpp's llama-server, vLLM) instead of a local GGUF.

Modules, in import order (each imports only those above it):

    grammar        the per-phase GBNF grammars a server gets (scores, then a ranking)
    tokens         token-id prompts built by the local rule, so responses never become control
                   tokens; token pieces for the decoder
    choice_route   the local decoder's steps answered by a server: reasoning in one request,
                   one one-token request per choice point, probabilities read (the default)
    grammar_route  the answer decoded on the server under the phase grammars (no probabilities)
    client         RemoteBackend: one server, its endpoints and fields, the route it takes, and
                   which failures are the server's
    pool           ServerPool: several servers, least outstanding work, failover; load_remote
    checkup        `ra-lite doctor --remote`: probabilities, slots, whether slots keep prefixes

    from ra_lite.remote import load_remote
    judge = load_remote("http://gpu-box:8080")                        # llama-server
    judge = load_remote("http://a:8080,http://b:8080")                # two, with failover
"""

from ra_lite.remote.client import QWEN3_TEMPLATE, RemoteBackend, ServerUnavailable, template_from_gguf
from ra_lite.remote.pool import ServerPool, load_remote

__all__ = ["QWEN3_TEMPLATE", "RemoteBackend", "ServerPool", "ServerUnavailable", "load_remote",
           "template_from_gguf"]
