/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include "bmap-checksum.h"
#include "bmap-copy.h"
#include "bmap-create.h"
#include "bmap-eject.h"
#include "bmap-error.h"
#include "bmap-format.h"
#include "bmap-locate.h"
#include "bmap-mapping.h"
#include "bmap-progress.h"
#include "bmap-source.h"
#include "bmap-target.h"
#include "bmap-text.h"
