#!/bin/sh
# Make sure Fashion-MNIST is available: the Debian package dataset-fashion-mnist installs its
# gzip IDX files to /usr/share/datasets/fashion-mnist. Install it when missing and apt is usable;
# otherwise explain how to point spikebridge at IDX files of your own.
DIR=/usr/share/datasets/fashion-mnist
if [ -n "$SPIKEBRIDGE_DATA_DIR" ] || [ -f "$DIR/train-images-idx3-ubyte.gz" ]; then
    exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" != "0" ]; then
        if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else SUDO="none"; fi
    fi
    if [ "$SUDO" != "none" ]; then
        echo "Installing Fashion-MNIST (Debian package dataset-fashion-mnist)..."
        if $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
           { $SUDO apt-get update -qq >/dev/null 2>&1 && \
             $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; }; then
            [ -f "$DIR/train-images-idx3-ubyte.gz" ] && exit 0
        fi
    fi
fi
cat >&2 <<MSG
Fashion-MNIST was not found at $DIR and could not be installed automatically.
Either install it (Debian/Ubuntu: apt-get install dataset-fashion-mnist), or download the four
IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz,
t10k-labels-idx1-ubyte.gz) into a directory and point spikebridge at it:
    export SPIKEBRIDGE_DATA_DIR=/path/to/dir      # or: spikebridge ... --data-dir /path/to/dir
MSG
exit 1
