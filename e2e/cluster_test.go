package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis Cluster: three masters started by the test share the slots. The
// daemon blocks through the cluster (every key under the {authguard} hash
// tag, so one script writes a block whole), the gateway enforces it, the
// operator CLI lists it, and the runbook's two-key DEL, with the tagged
// names, gives the IP a clean slate.
func TestRedisCluster(t *testing.T) {
	nodes := startRedisCluster(t, 3)
	var addrs []string
	for _, n := range nodes {
		addrs = append(addrs, n.addr)
	}
	seeds := strings.Join(addrs, ",")
	clusterArgs := []string{"--redis-cluster-addrs", seeds}
	s := newStack(t, stackOptions{ttl: "300s", dArgs: clusterArgs, gwArgs: clusterArgs, redis: nodes[0]})
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	defer cc.Close()
	s.rdb, s.keyPrefix = cc, "{authguard}"
	ctx := context.Background()

	ip := "203.0.113.120"
	for range 5 {
		s.login(ip, "guess")
	}
	s.awaitBlocked(ip)
	for _, key := range []string{"{authguard}ip_block:" + ip, "{authguard}login_fail:" + ip, "{authguard}authguard:block:" + ip} {
		if n, err := cc.Exists(ctx, key).Result(); err != nil || n != 1 {
			t.Errorf("%s: exists %d, %v", key, n, err)
		}
	}
	if n, _ := cc.XLen(ctx, "{authguard}authguard:evidence").Result(); n < 1 {
		t.Error("no evidence record in the cluster")
	}

	out, err := exec.Command(filepath.Join(binDir, "authguard"), "blocks", "list", "--redis-cluster-addrs", seeds).CombinedOutput()
	if err != nil || !strings.Contains(string(out), ip) {
		t.Errorf("blocks list through the cluster: %v\n%s", err, out)
	}

	// The runbook's clean slate, with the tagged key names.
	if err := cc.Del(ctx, "{authguard}ip_block:"+ip, "{authguard}login_fail:"+ip).Err(); err != nil {
		t.Fatal(err)
	}
	s.expectCleanSlate(ip, "DEL of both tagged keys")
}

// startRedisCluster starts n redis-server masters in cluster mode, splits
// the 16384 slots between them and waits until the cluster says ok.
func startRedisCluster(t *testing.T, n int) []*redisServer {
	t.Helper()
	ctx := context.Background()
	var nodes []*redisServer
	var buses []string
	for range n {
		_, busPort, _ := strings.Cut(freeAddr(t), ":")
		buses = append(buses, busPort)
		nodes = append(nodes, startRedisServer(t, "--cluster-enabled", "yes", "--cluster-port", busPort,
			"--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"))
	}
	var clients []*redis.Client
	for _, node := range nodes {
		clients = append(clients, node.client())
	}
	for i, c := range clients {
		node := nodes[i]
		lo, hi := i*16384/n, (i+1)*16384/n-1
		if err := c.ClusterAddSlotsRange(ctx, lo, hi).Err(); err != nil {
			t.Fatalf("assign slots %d-%d: %v", lo, hi, err)
		}
		if i > 0 {
			host, port, _ := strings.Cut(node.addr, ":")
			// The bus port is not the default port+10000: name it.
			if err := clients[0].Do(ctx, "cluster", "meet", host, port, buses[i]).Err(); err != nil {
				t.Fatalf("cluster meet: %v", err)
			}
		}
	}
	eventually(t, 30*time.Second, "the cluster to be ok on every node", func() bool {
		for _, c := range clients {
			info, err := c.ClusterInfo(ctx).Result()
			if err != nil || !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_known_nodes:"+strconv.Itoa(n)) {
				return false
			}
		}
		return true
	})
	return nodes
}
