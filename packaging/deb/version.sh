#!/bin/sh
# version.sh VERSION prints the Debian package version of a build's
# VERSION (`git describe --tags --always --dirty`, or make VERSION=...),
# ordered as dpkg compares them:
#
#   v1.2.0               1.2.0
#   v1.2.0-rc.1          1.2.0~rc.1          before 1.2.0
#   v1.2.0-3-gabc1234    1.2.0+3.gabc1234    after 1.2.0
#   abc1234 (no tag)     0.0.0+gabc1234
#   ...-dirty            ...+dirty
#   (empty)              0.0.0
set -eu
v=${1#v}
case $v in
'') echo 0.0.0; exit ;;
[0-9]*.[0-9]*) ;;
*) v=0.0.0+g$v ;;
esac
printf '%s\n' "$v" | sed -E 's/-([0-9]+)-g([0-9a-f]+)/+\1.g\2/; s/-dirty$/+dirty/; s/-/~/g'
