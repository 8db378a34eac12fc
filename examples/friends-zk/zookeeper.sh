#!/usr/bin/env bash
# Runs a throw-away ZooKeeper server on 127.0.0.1:${1:-2181} in the foreground
# (Debian's `zookeeper` package; installed with apt-get when missing, as root).
# Digest auth needs no server setting: the nodes authenticate as the `auth` of
# cluster.lua (luahost:change-me) and create their znodes creator-only. To
# look at them with zkCli: `addauth digest luahost:change-me`, then `ls -R /luahost`.
set -euo pipefail
port=${1:-2181}
jar=/usr/share/java/zookeeper.jar
if [ ! -e "$jar" ]; then
    [ "$(id -u)" = 0 ] || { echo "install ZooKeeper first: sudo apt-get install -y zookeeper" >&2; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends zookeeper \
        || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends zookeeper; }
fi
dir=$(mktemp -d /tmp/luahost-zk.XXXXXX)
trap 'rm -rf "$dir"' EXIT
cat > "$dir/zoo.cfg" <<CFG
tickTime=2000
dataDir=$dir/data
clientPort=$port
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,stat,mntr
maxSessionTimeout=60000
CFG
echo "ZooKeeper on 127.0.0.1:$port (data in $dir; Ctrl-C stops it); the demo's znodes need digest auth luahost:change-me"
exec java -Xmx256m -XX:+UseSerialGC -cp "$jar" org.apache.zookeeper.server.ZooKeeperServerMain "$dir/zoo.cfg"
