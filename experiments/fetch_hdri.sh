#!/usr/bin/env bash
# Rebuilds the 26 CC0 HDR panoramas used for training and evaluation on a fresh machine, from
# the npm package @pmndrs/assets 1.7.0 (18 Poly Haven HDRIs, stored as base64 data URLs in
# hdri/*.exr.js) and the Debian package blender-data 3.4.1 (8 HDRI Haven studio lights), then
# checks every file against the SHA-256 list below.
#
#   bash experiments/fetch_hdri.sh OUT_DIR
#
# Needs: npm, apt-get (download only, no install), dpkg-deb, python3.
set -euo pipefail
OUT=${1:?usage: fetch_hdri.sh OUT_DIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cd "$TMP"

npm pack --silent @pmndrs/assets@1.7.0 >/dev/null
tar xzf pmndrs-assets-1.7.0.tgz package/hdri
python3 - "$OUT" <<'PY'
import base64, pathlib, sys
out = pathlib.Path(sys.argv[1])
for js in sorted(pathlib.Path("package/hdri").glob("*.exr.js")):
    text = js.read_text()
    payload = text.split("base64,", 1)[1].rsplit("'", 1)[0]
    name = "polyhaven_" + js.name[: -len(".exr.js")] + ".exr"
    (out / name).write_bytes(base64.b64decode(payload))
PY

apt-get download blender-data >/dev/null 2>&1 || apt-get download blender-data=3.4.1+dfsg-2
dpkg-deb -x blender-data_*_all.deb deb
for f in deb/usr/share/blender/datafiles/studiolights/world/*.exr; do
  cp "$f" "$OUT/blender_$(basename "$f")"
done
cp deb/usr/share/blender/datafiles/studiolights/world/license.txt "$OUT/blender_license.txt"

cd "$OUT"
sha256sum -c --quiet <<'SUMS'
70940108df90c0721799d29f758ca79e67e509d9a2636487e639db7779561524  blender_city.exr
1518fa37da6a8a389810a7a70262c410553018a51f0be9e248155b9bb363ff3d  blender_courtyard.exr
63ad3243d0f9c29bd1f51b9a3bbf5c0ad25ea39299698dba6cfc29d1660d6008  blender_forest.exr
4f6810b182ade346eac6964bf02405adf430c321b8853a644316af4e05d0fdb5  blender_interior.exr
a46488f5cb744f325abc9f5af3c3eeb5d9393df69b5178fbe727538522120045  blender_night.exr
e501dd8a1172bd0e03903ede7f452300f8368448fe74720600338304d79281d9  blender_studio.exr
b97206217e29763d62d9a65ad2d7058460acfb4824659e7a59f5bde374f21937  blender_sunrise.exr
a164f20b86bc43ba4afd66c988a20a9dd5f1a0a5d8e960aed57a33f78119c168  blender_sunset.exr
31c62c03b5686b3d899071070ec1bfc760a3ddc1e6a05915ebc28102fef2fb1c  polyhaven_apartment.exr
921f8b95cd1ae8bda602d4d395d8ce5574975ae0df626504eb4387cc963212ea  polyhaven_bridge.exr
82847b3f3e2073d16647be2eb5712dc0f7e37ddc9480a1d45f2270fe8cd048f6  polyhaven_city.exr
02529d0a04dbc6e761adb9b4f6bcb07b0ef3931b218b394ee6be68b1fe39ce79  polyhaven_dawn.exr
2a3c5a870167dc1a1ad44115cd0c554cfde97fa6ca859f4f90f39771db90b54c  polyhaven_esplanade.exr
6fff311b5f3dad0910d8f334a6d9d88218ffd873d72c679ee1b7e4bccfa140e3  polyhaven_forest.exr
205a84e0108d40fb207e077db9bc68a15f329a8af8ee1f82c28524e967963b81  polyhaven_hall.exr
4f993660d9c53e97cb23f2d901e06aed9bc0323f6cd9079ec0de02e73634796e  polyhaven_lab.exr
55b54fc7b4efc5e9fef27529208d4abe9614839307f40490b135ce75aa08b72c  polyhaven_lobby.exr
9509f1b917dbb4c98d63b92e9fd12fb79e3376d17ec3186e2de39543e32ce5ff  polyhaven_night.exr
00e78fd8fe0ac81f73eb3682b1a4e2e1b909148f1b06d1e52e771d4fec3d02a1  polyhaven_park.exr
a72412700b91a49080a582420476d2ab9a1e8fd181031f4ae7ec5e2596addc2a  polyhaven_sky.exr
08038ed9159c24bb732d2218dafa09cef2abaa44f9ce11ec511d87c842d88fad  polyhaven_studio.exr
d48b92f8fd8d1e8eb111d90284a007f811a4d57abe4fa6faf10165287a3fe9c2  polyhaven_sunrise.exr
d09a4d7581f5454f13c3da3c323a231d00a34e60200de7654a895d2d41a7ceb7  polyhaven_sunset.exr
8200c809a7032efaa7d9fa3a5c64939d7f07d26478bc2418af624150af90dac9  polyhaven_venice.exr
bb11fe7e9c3037b8db21beab826a7ed7c452a48cb6d361f982ca7311aacba9c1  polyhaven_warehouse.exr
793ca687c647e032c79ea3a67bd016ad3158d17506540cfa8fdd901550cc0a5d  polyhaven_workshop.exr
SUMS
echo "fetch_hdri: 26 HDR panoramas in $OUT (checksums verified)"
