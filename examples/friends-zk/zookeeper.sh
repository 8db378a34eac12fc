#!/usr/bin/env bash
# Runs a throw-away ZooKeeper server on 127.0.0.1:${1:-2181} in the foreground
# (Debian's `zookeeper` package; installed with apt-get when missing, as root).
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
echo "ZooKeeper on 127.0.0.1:$port (data in $dir; Ctrl-C stops it)"
exec java -Xmx256m -XX:+UseSerialGC -cp "$jar" org.apache.zookeeper.server.ZooKeeperServerMain "$dir/zoo.cfg"
