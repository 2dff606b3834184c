"""Client-side alarms: what the node tells the group's notify recipients
itself when it cannot tell the server (a result or a retry report it could
not deliver, an internal error).

``sender.py`` holds ``Alarms`` (the bounded queue, the ``snailjob-alarms``
thread, the rate limit, the message texts and the test alarm);
``channels.py`` the DingTalk, email, WeCom, Lark and webhook channels (loaded
when the first alarm is sent).  Which recipients hear of which scene comes
from the group config (``snailjob.config_sync``).
"""

from snailjob.alarms.sender import AlarmDelivery, Alarms, Identity
from snailjob.config_sync import ClientScene

__all__ = ["AlarmDelivery", "Alarms", "ClientScene", "Identity"]
