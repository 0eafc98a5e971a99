#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The old name of bench/vhost-user.sh (the issue's name); same arguments.
exec "$(dirname "$0")/vhost-user.sh" "$@"
