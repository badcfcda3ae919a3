"""Two emulators never share state: each test gets its own."""


def test_two_emulators_do_not_share_state(emulator_factory):
    a = emulator_factory()
    b = emulator_factory()
    assert a.url != b.url
    a.client("ssm").put_parameter(Name="/isolation/probe", Value="a", Type="String")
    assert [p["Name"] for p in a.client("ssm").describe_parameters()["Parameters"]] == ["/isolation/probe"]
    assert b.client("ssm").describe_parameters()["Parameters"] == []
