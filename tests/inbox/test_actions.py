"""Action lines of the in-app part: parsed off the end of the body, safe URLs only."""

from notify.inbox.actions import MAX_ACTIONS, split_actions


def test_trailing_action_lines_are_split_off_in_order():
    body, actions = split_actions(
        "Hello\nthere\naction: A | /a\n  ACTION:  B b |https://b.example/x  \n"
    )
    assert body == "Hello\nthere"
    assert actions == [{"label": "A", "url": "/a"}, {"label": "B b", "url": "https://b.example/x"}]


def test_action_lines_in_the_middle_stay_in_the_body():
    body, actions = split_actions("action: A | /a\nmore text")
    assert body == "action: A | /a\nmore text"
    assert actions == []


def test_unsafe_urls_are_dropped_and_the_count_is_bounded():
    text = (
        "x\n" + "".join(f"action: L{n} | /p{n}\n" for n in range(5)) + "action: J | javascript:x\n"
    )
    body, actions = split_actions(text)
    assert body == "x"
    assert [a["label"] for a in actions] == [f"L{n}" for n in range(MAX_ACTIONS)]
    _, none = split_actions("x\naction: D | //evil.example/\naction: E | data:text/html,x")
    assert none == []
