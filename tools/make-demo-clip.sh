#!/usr/bin/env bash
# Makes crates/openivs/assets/demo-clip.flv, the clip `openivs serve --demo` loops: 4 s of
# Debian ffmpeg's testsrc2 at 640x360, 30 fps, H.264 (a keyframe every second, no B-frames, so
# every loop starts on a keyframe) with a 440 Hz tone in AAC. Run once; the result is committed.
set -euo pipefail
cd "$(dirname "$0")/.."
ffmpeg -hide_banner -loglevel error -y \
  -f lavfi -i testsrc2=size=640x360:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 \
  -t 4 -c:v libx264 -preset slow -profile:v main -pix_fmt yuv420p -g 30 -keyint_min 30 -sc_threshold 0 -bf 0 \
  -b:v 400k -maxrate 400k -bufsize 400k -c:a aac -b:a 64k -ac 1 \
  -metadata encoder=openivs-demo -f flv crates/openivs/assets/demo-clip.flv
