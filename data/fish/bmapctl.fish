# SPDX-License-Identifier: GPL-2.0-or-later
# fish completion for bmapctl

set -l __bmapctl_commands create copy flash devices jobs cancel monitor auto-flash

# Device nodes as bmapd lists them (system disks hidden) and their names
# (sdb), as DEST takes either; nothing when bmapd does not answer.
function __bmapctl_devices
    for node in (bmapctl --no-ask-password devices 2>/dev/null | awk 'NR > 1 && $1 ~ /^\// { print $1 }')
        printf '%s\tdevice\n' $node (string replace /dev/ '' -- $node)
    end
end

function __bmapctl_jobs
    bmapctl --no-ask-password jobs 2>/dev/null | awk 'NR > 1 && NF > 3 && $1 ~ /^[0-9]+$/ { print $1 "\t" $6 }'
end

function __bmapctl_rules
    bmapctl --no-ask-password auto-flash --list 2>/dev/null | awk 'NR > 1 && NF > 3 && $1 ~ /^[0-9]+$/ { print $1 "\t" $3 }'
end

# How many arguments that are no option follow the command (options that
# take a value count their value out).
function __bmapctl_args
    set -l tokens (commandline -opc)
    set -l n 0
    set -l skip 0
    set -l seen 0
    for t in $tokens[2..-1]
        if test $skip -eq 1
            set skip 0
        else if contains -- $t -o --output --checksum --mapping --bmap --bmap-sig --psplash-pipe --keyring --fingerprint --match-bus \
                --match-serial --match-vendor --match-model --match-port --min-size --max-size \
                --count --description --remove
            set skip 1
        else if not string match -q -- '-*' $t
            set n (math $n + 1)
        end
    end
    # The command itself is the first.
    echo (math $n - 1)
end

function __bmapctl_at_arg -a command index
    __fish_seen_subcommand_from $command; and test (__bmapctl_args) -eq $index
end

complete -c bmapctl -f

# Global options.
complete -c bmapctl -s q -l quiet -d 'Print only errors'
complete -c bmapctl -l json -d 'Machine-readable output (JSON lines)'
complete -c bmapctl -l no-ask-password -d 'Do not ask for a password'
complete -c bmapctl -l local -d 'Run the engine in-process, never through bmapd'
complete -c bmapctl -s d -l debug -d 'Print debugging messages'
complete -c bmapctl -l version -d 'Print the version and exit'
complete -c bmapctl -s h -l help -d 'Show help'

# Commands.
set -l nocmd "not __fish_seen_subcommand_from $__bmapctl_commands"
complete -c bmapctl -n $nocmd -a create -d 'Create the bmap of an image'
complete -c bmapctl -n $nocmd -a copy -d 'Write an image onto a device or into a file'
complete -c bmapctl -n $nocmd -a flash -d 'Same as copy'
complete -c bmapctl -n $nocmd -a devices -d 'List the block devices bmapd can write to'
complete -c bmapctl -n $nocmd -a jobs -d 'List running and recently finished jobs'
complete -c bmapctl -n $nocmd -a cancel -d 'Cancel a job'
complete -c bmapctl -n $nocmd -a monitor -d 'Follow devices and jobs until Ctrl-C'
complete -c bmapctl -n $nocmd -a auto-flash -d 'Flash every card inserted from now on that matches'

# create
set -l c "__fish_seen_subcommand_from create"
complete -c bmapctl -n $c -s o -l output -r -F -d 'Write the bmap to FILE'
complete -c bmapctl -n $c -l no-checksum -d 'Do not checksum the mapped ranges'
complete -c bmapctl -n $c -l checksum -x -a 'sha256 sha512 sha1' -d 'Checksum type'
complete -c bmapctl -n $c -l mapping -x -a 'auto fiemap seek zero-scan' -d 'How holes are found'
complete -c bmapctl -n $c -l daemon -d 'Let bmapd create the bmap'
complete -c bmapctl -n "__bmapctl_at_arg create 0" -F

# copy and flash, and what auto-flash shares with them
set -l c "__fish_seen_subcommand_from copy flash auto-flash"
complete -c bmapctl -n $c -l bmap -r -F -d 'The bmap of the image'
complete -c bmapctl -n $c -l nobmap -d 'Write every block of the image, no bmap'
complete -c bmapctl -n $c -l no-verify -d "Do not check the bmap's checksums while writing"
complete -c bmapctl -n $c -l verify-written -d 'Read the written blocks back and check them'
complete -c bmapctl -n $c -l bmap-sig -r -F -d "The bmap's detached signature"
complete -c bmapctl -n $c -l no-sig-verify -d "Do not check the bmap's signature"
complete -c bmapctl -n $c -l fingerprint -x -d 'The bmap must be signed by the key with this fingerprint'
complete -c bmapctl -n $c -l keyring -r -F -d 'Check the signature against the keys in FILE only'
complete -c bmapctl -n $c -l minimize-writes -d 'Read DEST first and write only the blocks that differ'
complete -c bmapctl -n $c -l discard -d 'After writing, discard the ranges the bmap does not map'
complete -c bmapctl -n $c -l zero-unmapped -d 'After writing, make the unmapped ranges read back as zeros'
complete -c bmapctl -n $c -l relocate-gpt -d "After writing, move a GPT's backup to the end of a larger device"
set -l c "__fish_seen_subcommand_from copy flash"
complete -c bmapctl -n $c -l eject -d "After the last step, eject the medium"
complete -c bmapctl -n $c -l power-off -d "After the last step, power off the USB device"
complete -c bmapctl -n $c -l removable-device -d 'Refuse to write unless DEST is a removable block device'
complete -c bmapctl -n $c -l unmount -d "Unmount the device's mounted partitions first"
complete -c bmapctl -n $c -l detach -d 'Start the job in bmapd and return at once'
complete -c bmapctl -n $c -l daemon -d 'Write a block device through bmapd only, never in-process'
complete -c bmapctl -n $c -l psplash-pipe -r -F -d 'Also write the progress to this psplash FIFO'
complete -c bmapctl -n "__bmapctl_at_arg copy 0; or __bmapctl_at_arg flash 0" -F
complete -c bmapctl -n "__bmapctl_at_arg copy 1; or __bmapctl_at_arg flash 1" -F -a '(__bmapctl_devices)'

# devices
complete -c bmapctl -n "__fish_seen_subcommand_from devices" -s a -l all -d 'Also list system disks'

# cancel
complete -c bmapctl -n "__bmapctl_at_arg cancel 0" -x -a '(__bmapctl_jobs)'

# auto-flash
set -l c "__fish_seen_subcommand_from auto-flash"
complete -c bmapctl -n $c -l match-bus -x -a 'usb mmc sdio ata scsi nvme virtio virtual' -d 'Only devices on this bus'
complete -c bmapctl -n $c -l match-serial -x -d 'Only devices whose serial matches the glob'
complete -c bmapctl -n $c -l match-vendor -x -d 'Only devices whose vendor matches the glob'
complete -c bmapctl -n $c -l match-model -x -d 'Only devices whose model matches the glob'
complete -c bmapctl -n $c -l match-port -x -d 'Only devices whose udev ID_PATH matches the glob'
complete -c bmapctl -n $c -l min-size -x -d 'Only devices of at least SIZE'
complete -c bmapctl -n $c -l max-size -x -d 'Only devices of at most SIZE'
complete -c bmapctl -n $c -l allow-non-removable -d 'Also flash non-removable devices that are not system disks'
complete -c bmapctl -n $c -l count -x -d 'Disarm after N cards'
complete -c bmapctl -n $c -l keep -d 'Keep the rule in bmapd after bmapctl leaves'
complete -c bmapctl -n $c -l description -x -d 'Label of the rule and its jobs'
complete -c bmapctl -n $c -l list -d 'List the armed rules'
complete -c bmapctl -n $c -l remove -x -a '(__bmapctl_rules)' -d 'Remove a rule'
complete -c bmapctl -n "__bmapctl_at_arg auto-flash 0" -F
