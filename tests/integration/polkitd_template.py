# SPDX-License-Identifier: GPL-2.0-or-later
'''A polkitd mock for bmapd's integration tests (python-dbusmock template).

Like dbusmock's own polkitd template, plus what bmapd's tests need to see:
challenges ("ask": an action that needs a password), a log of every check
with its subject, details and flags (AllowUserInteraction = flags & 1), and
checks held back until released.

A challenge with AllowUserInteraction is answered as polkitd does when an
authentication agent asks the user: the agent's answer (SetAgentAnswer,
yes by default) decides, a "no" being a dismissed dialog, and the request
is logged (GetAgentRequests). Without AllowUserInteraction it is the
challenge polkitd returns: not authorized, is_challenge true.
'''

import dbus

from dbusmock import MOCK_IFACE

BUS_NAME = 'org.freedesktop.PolicyKit1'
MAIN_OBJ = '/org/freedesktop/PolicyKit1/Authority'
MAIN_IFACE = 'org.freedesktop.PolicyKit1.Authority'
SYSTEM_BUS = True

ALLOW_USER_INTERACTION = 1


def load(mock, _parameters):
    mock.AddProperties(MAIN_IFACE, dbus.Dictionary({
        'BackendName': 'local',
        'BackendVersion': '0.8.15',
        'BackendFeatures': dbus.UInt32(1, variant_level=1),
    }, signature='sv'))
    mock.allowed = []
    mock.challenge = []
    mock.checks = []
    mock.hold = False
    mock.held = []
    mock.cancelled = []
    mock.agent_answer = True
    mock.agent_requests = []


def _answer(self, action_id, flags, name):
    if action_id in self.allowed:
        return (True, False, {})
    if action_id in self.challenge:
        if not flags & ALLOW_USER_INTERACTION:
            return (False, True, {})
        # The agent asked the user for a password.
        self.agent_requests.append((action_id, name))
        if self.agent_answer:
            return (True, False, {})
        return (False, False, {'polkit.dismissed': 'true'})
    return (False, False, {})


@dbus.service.method(MAIN_IFACE, in_signature='(sa{sv})sa{ss}us', out_signature='(bba{ss})',
                     async_callbacks=('ok_cb', '_err_cb'))
def CheckAuthorization(self, subject, action_id, details, flags, cancellation_id, ok_cb,
                       _err_cb):
    kind, subject_details = subject
    name = str(subject_details.get('name', ''))
    self.checks.append((str(action_id), dict((str(k), str(v)) for k, v in details.items()),
                        int(flags), str(kind), name, str(cancellation_id)))
    if self.hold:
        self.held.append((ok_cb, str(action_id), int(flags), name))
        return
    ok_cb(_answer(self, str(action_id), int(flags), name))


@dbus.service.method(MAIN_IFACE, in_signature='s', out_signature='')
def CancelCheckAuthorization(self, cancellation_id):
    self.cancelled.append(str(cancellation_id))


@dbus.service.method(MAIN_IFACE, in_signature='(sa{sv})ss')
def RegisterAuthenticationAgent(_self, _subject, _locale, _object_path):
    pass


@dbus.service.method(MOCK_IFACE, in_signature='as', out_signature='')
def SetAllowed(self, actions):
    '''Actions authorized without asking.'''
    self.allowed = [str(a) for a in actions]


@dbus.service.method(MOCK_IFACE, in_signature='as', out_signature='')
def SetChallenge(self, actions):
    '''Actions that need authentication ("ask"): the agent answers when the check
    allows user interaction, otherwise a challenge is returned.'''
    self.challenge = [str(a) for a in actions]


@dbus.service.method(MOCK_IFACE, in_signature='b', out_signature='')
def SetAgentAnswer(self, answer):
    '''What the user tells the agent: the password (True) or dismisses it (False).'''
    self.agent_answer = bool(answer)


@dbus.service.method(MOCK_IFACE, in_signature='', out_signature='a(ss)')
def GetAgentRequests(self):
    '''Every password request an agent showed: action, subject name.'''
    return dbus.Array(self.agent_requests, signature='(ss)')


@dbus.service.method(MOCK_IFACE, in_signature='', out_signature='a(sa{ss}usss)')
def GetChecks(self):
    '''Every check so far: action, details, flags, subject kind, subject name, cancellation id.'''
    return dbus.Array(self.checks, signature='(sa{ss}usss)')


@dbus.service.method(MOCK_IFACE, in_signature='', out_signature='')
def ClearChecks(self):
    self.checks = []
    self.cancelled = []
    self.agent_requests = []


@dbus.service.method(MOCK_IFACE, in_signature='', out_signature='as')
def GetCancelled(self):
    return dbus.Array(self.cancelled, signature='s')


@dbus.service.method(MOCK_IFACE, in_signature='b', out_signature='')
def SetHold(self, hold):
    '''Hold the answers back until ReleaseHeld().'''
    self.hold = bool(hold)


@dbus.service.method(MOCK_IFACE, in_signature='', out_signature='u')
def GetHeldCount(self):
    return dbus.UInt32(len(self.held))


@dbus.service.method(MOCK_IFACE, in_signature='', out_signature='')
def ReleaseHeld(self):
    held, self.held = self.held, []
    for ok_cb, action_id, flags, name in held:
        ok_cb(_answer(self, action_id, flags, name))
