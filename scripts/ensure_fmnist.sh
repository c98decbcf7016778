#!/usr/bin/env bash
# Make sure the Fashion-MNIST IDX files exist; install Debian's dataset-fashion-mnist when apt is usable.
set -euo pipefail
dir="${FMNIST_DIR:-/usr/share/datasets/fashion-mnist}"
have() { [ -f "$dir/train-images-idx3-ubyte.gz" ] || [ -f "$dir/train-images-idx3-ubyte" ]; }
have && exit 0
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "Installing Fashion-MNIST from Debian (dataset-fashion-mnist) ..."
  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null
  have && exit 0
fi
echo "Fashion-MNIST IDX files not found in $dir and apt-get is not usable here." >&2
echo "Put train/t10k-{images-idx3,labels-idx1}-ubyte[.gz] in a folder and pass data.root=/that/folder" >&2
echo "(or: make FMNIST_DIR=/that/folder demo)." >&2
exit 1
