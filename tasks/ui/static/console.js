// The rollback form: "Confirm" stays disabled until a reason is given and the plan's token typed.
// (No inline scripts anywhere: the console's Content-Security-Policy forbids them.)
function patchgateConfirmGate() {
  const form = document.getElementById("confirm-form");
  if (!form) return;
  const reason = document.getElementById("reason");
  const token = document.getElementById("token");
  const button = document.getElementById("confirm");
  const update = () => {
    button.disabled = !(reason.value.trim() && token.value.trim() === form.dataset.token);
  };
  reason.addEventListener("input", update);
  token.addEventListener("input", update);
  update();
}
document.addEventListener("DOMContentLoaded", patchgateConfirmGate);
