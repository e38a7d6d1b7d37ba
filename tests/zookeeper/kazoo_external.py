"""pytest plugin: run kazoo's own test suite against already-running servers (a Cairn node's
ZooKeeper port), in place of the ZooKeeper processes kazoo's harness would start.

Usage:
    KAZOO_EXTERNAL_HOSTS=127.0.0.1:2181[,127.0.0.1:2182,...] \
    pytest -p kazoo_external --pyargs kazoo.tests

Optional:
    KAZOO_EXTERNAL_SECURE_HOSTS=127.0.0.1:2281,...   (TLS ports, same order)
    KAZOO_EXTERNAL_SSL_DIR=dir with client_key.pem client_cert.pem ca_cert.pem
    KAZOO_EXTERNAL_STOP_CMD / KAZOO_EXTERNAL_START_CMD: shell commands run
        with {i} replaced by the server index, used by tests that stop and
        restart a server (test_update_host_list, test_request_queuing_*,
        test_read_only); without them stop()/run() are no-ops.
"""
import os
import subprocess

import kazoo.testing.harness as harness


class ExternalServer(object):
    def __init__(self, index, address, secure_address=None):
        self.index = index
        self.host, port = address.rsplit(":", 1)
        self.client_port = int(port)
        self._address = address
        self._secure_address = secure_address or address
        self._running = True

    @property
    def address(self):
        return self._address

    @property
    def secure_address(self):
        return self._secure_address

    @property
    def secure_client_port(self):
        return int(self._secure_address.rsplit(":", 1)[1])

    @property
    def running(self):
        return self._running

    def _cmd(self, var):
        cmd = os.environ.get(var)
        if cmd:
            subprocess.check_call(cmd.format(i=self.index), shell=True)

    def run(self):
        if not self._running:
            self._cmd("KAZOO_EXTERNAL_START_CMD")
            self._running = True

    def stop(self):
        if self._running:
            self._cmd("KAZOO_EXTERNAL_STOP_CMD")
            self._running = False

    def reset(self):
        pass

    def destroy(self):
        pass

    def get_logs(self, num_lines=100):
        return []


class ExternalCluster(object):
    def __init__(self, hosts, secure_hosts):
        self._servers = [
            ExternalServer(
                i, h, secure_hosts[i] if i < len(secure_hosts) else None
            )
            for i, h in enumerate(hosts)
        ]

    def __getitem__(self, k):
        return self._servers[k]

    def __iter__(self):
        return iter(self._servers)

    def __len__(self):
        return len(self._servers)

    def start(self):
        for s in self._servers:
            s.run()

    def stop(self):
        for s in self._servers:
            s.stop()

    def terminate(self):  # called by KazooTestCase.tearDownClass
        pass

    def reset(self):
        pass

    def get_logs(self):
        return []

    def get_ssl_client_configuration(self):
        d = os.environ.get("KAZOO_EXTERNAL_SSL_DIR")
        if not d:
            raise RuntimeError("KAZOO_EXTERNAL_SSL_DIR not set")

        def rd(n):
            with open(os.path.join(d, n), "rb") as f:
                return f.read()

        return {
            "client_key": rd("client_key.pem"),
            "client_cert": rd("client_cert.pem"),
            "ca_cert": rd("ca_cert.pem"),
        }


def _split(var):
    return [h.strip() for h in os.environ.get(var, "").split(",") if h.strip()]


_CLUSTER = ExternalCluster(
    _split("KAZOO_EXTERNAL_HOSTS") or ["127.0.0.1:2181"],
    _split("KAZOO_EXTERNAL_SECURE_HOSTS"),
)

# KazooTestHarness.cluster is `return get_global_cluster()` looked up in the
# harness module's globals at call time, so replacing the module attribute is
# enough; env changes (ZOOKEEPER_JAAS_AUTH, ZOOKEEPER_LOCAL_SESSION_RO) made by
# test_sasl / TestReadOnlyMode no longer rebuild anything.
harness.get_global_cluster = lambda: _CLUSTER
