/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include "bmapctl-common.h"

G_BEGIN_DECLS

int bmapctl_create (const BmapctlCommand *command, BmapctlOptions *options, int argc, char **argv);
int bmapctl_copy (const BmapctlCommand *command, BmapctlOptions *options, int argc, char **argv);

int bmapctl_devices (const BmapctlCommand *command, BmapctlOptions *options, int argc, char **argv);
int bmapctl_jobs (const BmapctlCommand *command, BmapctlOptions *options, int argc, char **argv);
int bmapctl_cancel (const BmapctlCommand *command, BmapctlOptions *options, int argc, char **argv);
int bmapctl_monitor (const BmapctlCommand *command, BmapctlOptions *options, int argc, char **argv);
int
bmapctl_autoflash (const BmapctlCommand *command, BmapctlOptions *options, int argc, char **argv);

G_END_DECLS
