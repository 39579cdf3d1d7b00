#!/usr/bin/env bash
# The H100 calibration run that produced calibration/data/h100_*: run_gpu.sh with PREFIX=h100.
#
#   OUT=calibration/data/new bash calibration/run_h100.sh
PREFIX=h100 exec bash "$(dirname "$0")/run_gpu.sh" "$@"
